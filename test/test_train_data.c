/*
 * cli/train_data: the chat JSONL of `tinkerbell train` -- rendering and
 * shifting, the assistant mask, truncation, errors with file and line,
 * and the seeded eval split; the progress line, metrics records and loss
 * curve of cli/train_report.
 */
#include "tb_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli/train_data.h"
#include "cli/train_report.h"
#include "text/base_chat.h"

static char *write_tmp(const char *text) {
  static char path[64];
  snprintf(path, sizeof(path), "/tmp/tb-train-data-XXXXXX");
  int fd = mkstemp(path);
  ASSERT(fd >= 0);
  size_t n = strlen(text);
  ASSERT_EQ_INT(write(fd, text, n), (ssize_t)n);
  close(fd);
  return path;
}

TEST(renders_shifts_and_masks) {
  const char *line = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
                     "{\"role\":\"assistant\",\"content\":\"yo\"}]}";
  tb__train_example_t e;
  tb_error_t err = { 0 };
  int truncated = 1;
  ASSERT_OK(tb__train_example_from_line(tb__base_renderer(), line, strlen(line), 512, 0, 7, &e, &truncated, &err));
  ASSERT_EQ_INT(truncated, 0);
  /* <|bos|> <|user|> h i <|end|> <|assistant|> y o <|end|>: 9 tokens, 8
   * predictions; trained targets are y, o and the closing <|end|>. */
  const int32_t all[] = { TB_TOK_BOS, TB_TOK_USER, 'h', 'i', TB_TOK_END,
                          TB_TOK_ASSISTANT, 'y', 'o', TB_TOK_END };
  ASSERT_EQ_INT(e.n, 8);
  for (size_t i = 0; i < 8; i++) {
    ASSERT_EQ_INT(e.tokens[i], all[i]);
    ASSERT_EQ_INT(e.targets[i], all[i + 1]);
    ASSERT_EQ_INT(e.weights[i] == 1.0f, i >= 5);
  }
  ASSERT_EQ_INT(e.n_trained, 3);
  ASSERT_EQ_INT(e.line, 7);
  ASSERT_STR_EQ(e.prompt, "hi");
  ASSERT_STR_EQ(e.reply, "yo");
  tb__train_example_free(&e);

  /* No assistant message: every token is a target. */
  line = "{\"messages\":[{\"role\":\"user\",\"content\":\"abc\"}]}";
  ASSERT_OK(tb__train_example_from_line(tb__base_renderer(), line, strlen(line), 512, 0, 1, &e, &truncated, &err));
  ASSERT_EQ_INT(e.n_trained, e.n);
  ASSERT(e.reply == NULL);
  tb__train_example_free(&e);

  /* Truncation keeps the first max_length tokens. */
  line = "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},"
         "{\"role\":\"assistant\",\"content\":\"a long reply\"}]}";
  ASSERT_OK(tb__train_example_from_line(tb__base_renderer(), line, strlen(line), 8, 0, 1, &e, &truncated, &err));
  ASSERT_EQ_INT(truncated, 1);
  ASSERT_EQ_INT(e.n, 7);
  ASSERT_EQ_INT(e.n_trained, 3);
  tb__train_example_free(&e);
}

/* --train-on last weights only the last assistant message; an assistant
 * message may carry its reasoning, nobody else's may. */
TEST(train_on_last_and_reasoning) {
  const char *line = "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},"
                     "{\"role\":\"assistant\",\"content\":\"bc\"},"
                     "{\"role\":\"user\",\"content\":\"d\"},"
                     "{\"role\":\"assistant\",\"content\":\"ef\","
                     "\"reasoning_content\":\"hm\"}]}";
  tb__train_example_t e;
  tb_error_t err = { 0 };
  int truncated;
  ASSERT_OK(tb__train_example_from_line(tb__base_renderer(), line, strlen(line), 512, 0, 1,
                                        &e, &truncated, &err));
  /* b c <|end|> and e f <|end|>. */
  ASSERT_EQ_INT(e.n_trained, 6);
  tb__train_example_free(&e);
  ASSERT_OK(tb__train_example_from_line(tb__base_renderer(), line, strlen(line), 512,
                                        TB_RENDER_TRAIN_LAST, 1, &e, &truncated, &err));
  ASSERT_EQ_INT(e.n_trained, 3);
  ASSERT_EQ_INT(e.targets[e.n - 3], 'e');
  tb__train_example_free(&e);
  line = "{\"messages\":[{\"role\":\"user\",\"content\":\"a\",\"reasoning_content\":\"x\"}]}";
  ASSERT_ERR(tb__train_example_from_line(tb__base_renderer(), line, strlen(line), 512, 0, 1,
                                         &e, &truncated, &err),
             TB_EFIELD);
  ASSERT_STR_CONTAINS(tb_error_message(&err),
                      "messages[0].reasoning_content: only an assistant message has one");
  tb_error_clear(&err);
  line = "{\"messages\":[{\"role\":\"assistant\",\"content\":\"a\",\"reasoning_content\":1}]}";
  ASSERT_ERR(tb__train_example_from_line(tb__base_renderer(), line, strlen(line), 512, 0, 1,
                                         &e, &truncated, &err),
             TB_EFIELD);
  ASSERT_STR_CONTAINS(tb_error_message(&err), "messages[0].reasoning_content: expected a string");
  tb_error_clear(&err);
}

TEST(bad_lines_name_file_line_and_field) {
  static const struct {
    const char *line, *want;
  } cases[] = {
    { "{\"messages\": [", "invalid JSON" },
    { "[1,2]", "expected an object" },
    { "{\"msgs\":[]}", "messages" },
    { "{\"messages\":[]}", "at least one message" },
    { "{\"messages\":[{\"role\":\"bot\",\"content\":\"x\"}]}", "messages[0].role" },
    { "{\"messages\":[{\"role\":\"user\"}]}", "messages[0].content" },
    { "{\"messages\":[{\"role\":\"user\",\"content\":7}]}", "messages[0].content" },
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char text[512];
    snprintf(text, sizeof(text),
             "{\"messages\":[{\"role\":\"user\",\"content\":\"ok\"}]}\n\n%s\n", cases[i].line);
    char *path = write_tmp(text);
    tb__train_data_t d;
    tb_error_t err = { 0 };
    ASSERT_ERR(tb__train_data_load(tb__base_renderer(), path, 256, 0, &d, &err), TB_EFIELD);
    char where[96];
    snprintf(where, sizeof(where), "%s:3: ", path);
    ASSERT_STR_CONTAINS(tb_error_message(&err), where);
    ASSERT_STR_CONTAINS(tb_error_message(&err), cases[i].want);
    tb_error_clear(&err);
    unlink(path);
  }
  /* An assistant reply past max_length leaves nothing to train. */
  char *path = write_tmp("{\"messages\":[{\"role\":\"user\",\"content\":\"a long question\"},"
                         "{\"role\":\"assistant\",\"content\":\"x\"}]}\n");
  tb__train_data_t d;
  tb_error_t err = { 0 };
  ASSERT_ERR(tb__train_data_load(tb__base_renderer(), path, 6, 0, &d, &err), TB_EFIELD);
  ASSERT_STR_CONTAINS(tb_error_message(&err), ":1: no assistant token");
  tb_error_clear(&err);
  unlink(path);

  path = write_tmp("\n  \n");
  ASSERT_ERR(tb__train_data_load(tb__base_renderer(), path, 64, 0, &d, &err), TB_EFIELD);
  ASSERT_STR_CONTAINS(tb_error_message(&err), "no conversations");
  tb_error_clear(&err);
  unlink(path);

  ASSERT_ERR(tb__train_data_load(tb__base_renderer(), "/nonexistent/data.jsonl", 64, 0, &d, &err), TB_ENOENT);
  ASSERT_STR_CONTAINS(tb_error_message(&err), "/nonexistent/data.jsonl");
  tb_error_clear(&err);
}

TEST(split_is_seeded_and_keeps_order) {
  char text[4096] = "";
  for (int i = 0; i < 20; i++) {
    char line[128];
    snprintf(line, sizeof(line),
             "{\"messages\":[{\"role\":\"user\",\"content\":\"q%d\"},"
             "{\"role\":\"assistant\",\"content\":\"a%d\"}]}\n", i, i);
    strcat(text, line);
  }
  char *path = write_tmp(text);
  tb__train_data_t a, b, ea, eb;
  tb_error_t err = { 0 };
  ASSERT_OK(tb__train_data_load(tb__base_renderer(), path, 64, 0, &a, &err));
  ASSERT_OK(tb__train_data_load(tb__base_renderer(), path, 64, 0, &b, &err));
  unlink(path);
  ASSERT_EQ_INT(a.n, 20);
  size_t total = a.n_tokens;
  ASSERT_OK(tb__train_data_split(&a, 0.2, 42, &ea));
  ASSERT_OK(tb__train_data_split(&b, 0.2, 42, &eb));
  ASSERT_EQ_INT(ea.n, 4);
  ASSERT_EQ_INT(a.n, 16);
  ASSERT_EQ_INT(a.n_tokens + ea.n_tokens, total);
  for (size_t i = 0; i < ea.n; i++)
    ASSERT_EQ_INT(ea.examples[i].line, eb.examples[i].line);
  for (size_t i = 1; i < a.n; i++)
    ASSERT(a.examples[i - 1].line < a.examples[i].line);
  for (size_t i = 1; i < ea.n; i++)
    ASSERT(ea.examples[i - 1].line < ea.examples[i].line);
  tb__train_data_free(&a);
  tb__train_data_free(&b);
  tb__train_data_free(&ea);
  tb__train_data_free(&eb);

  /* A tiny fraction still holds one example out; one example never. */
  path = write_tmp("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}\n");
  ASSERT_OK(tb__train_data_load(tb__base_renderer(), path, 64, 0, &a, &err));
  unlink(path);
  ASSERT_OK(tb__train_data_split(&a, 0.5, 1, &ea));
  ASSERT_EQ_INT(ea.n, 0);
  ASSERT_EQ_INT(a.n, 1);
  tb__train_data_free(&a);
}

TEST(the_example_dataset_loads) {
  tb__train_data_t d;
  tb_error_t err = { 0 };
  ASSERT_OK(tb__train_data_load(tb__base_renderer(), TB_SOURCE_ROOT "/examples/data/chat.jsonl", 256, 0, &d, &err));
  ASSERT_EQ_INT(d.n, 240);
  ASSERT_EQ_INT(d.n_truncated, 0);
  for (size_t i = 0; i < d.n; i++) {
    ASSERT(d.examples[i].prompt != NULL && d.examples[i].reply != NULL);
    ASSERT(d.examples[i].n_trained > 0);
  }
  tb__train_data_free(&d);
}

TEST(progress_metrics_and_svg) {
  tb__train_point_t p = { .step = 10, .epoch = 1, .loss = 1.5, .eval_loss = NAN,
                         .tokens_per_s = 812.4, .elapsed_s = 20 };
  tb__buf_t b = TB_BUF_INIT;
  ASSERT_OK(tb__train_progress(&b, &p, 40, 2, 8));
  ASSERT_OK(tb__buf_terminate(&b));
  /* 10 of 40 steps in 20 s: 60 s left. */
  ASSERT_STR_EQ(b.base, "step 10/40 epoch 1/2 [##......] loss 1.5000 812 tok/s ETA 1:00");
  tb__buf_reset(&b);
  p.eval_loss = 2.25;
  ASSERT_OK(tb__train_progress(&b, &p, 40, 2, 0));
  ASSERT_OK(tb__buf_terminate(&b));
  ASSERT_STR_EQ(b.base, "step 10/40 epoch 1/2 loss 1.5000 eval 2.2500 812 tok/s ETA 1:00");
  tb__buf_reset(&b);

  ASSERT_OK(tb__train_metrics_line(&b, &p));
  ASSERT_OK(tb__buf_terminate(&b));
  ASSERT_STR_EQ(b.base, "{\"step\":10,\"epoch\":1,\"loss\":1.5,\"eval_loss\":2.25,"
                        "\"tokens_per_s\":812.4,\"elapsed_s\":20.000}\n");
  tb__buf_reset(&b);

  tb__train_point_t pts[3] = {
    { .step = 1, .epoch = 1, .loss = 4, .eval_loss = NAN },
    { .step = 2, .epoch = 1, .loss = 2, .eval_loss = 3 },
    { .step = 4, .epoch = 1, .loss = 1, .eval_loss = NAN },
  };
  ASSERT_OK(tb__train_loss_svg(&b, pts, 3, 640, 360));
  ASSERT_OK(tb__buf_terminate(&b));
  ASSERT(strncmp(b.base, "<svg ", 5) == 0);
  ASSERT_STR_CONTAINS(b.base, "</svg>\n");
  /* The y axis runs 0..4 over the plot's 292 px (360 - 28 - 40); step 4 is
   * the right edge (64 + 560). */
  ASSERT_STR_CONTAINS(b.base, "points=\"204.0,28.0 344.0,174.0 624.0,247.0 \"");
  ASSERT_STR_CONTAINS(b.base, "<circle cx=\"344.0\" cy=\"101.0\"");
  ASSERT_STR_CONTAINS(b.base, ">eval</text>");
  tb__buf_reset(&b);
  ASSERT_OK(tb__train_loss_svg(&b, NULL, 0, 640, 360));
  ASSERT_OK(tb__buf_terminate(&b));
  ASSERT_STR_CONTAINS(b.base, "</svg>");
  tb__buf_free(&b);
}

TEST_LIST(
  TEST_ENTRY(renders_shifts_and_masks),
  TEST_ENTRY(bad_lines_name_file_line_and_field),
  TEST_ENTRY(train_on_last_and_reasoning),
  TEST_ENTRY(split_is_seeded_and_keeps_order),
  TEST_ENTRY(the_example_dataset_loads),
  TEST_ENTRY(progress_metrics_and_svg),
)
