/*
 * What the hardening tests of the server share (test_server_hardening.c,
 * test_server_files.c): a server with its training part
 * (test_server_training.h), calls in both dialects that must succeed or
 * fail just so, and the process' peak memory, by which a test tells that
 * nothing large was allocated.
 */
#ifndef TB_TEST_SERVER_HARDENING_H
#define TB_TEST_SERVER_HARDENING_H

#include "test_server_training.h"

#include <sys/resource.h>

/* A Tinker-dialect op answered with a request id: its future's result. */
static inline json_t *tinker_op(const char *path, const char *body) {
  char *rid = post_field(path, NULL, body, "request_id");
  json_t *v = result_json(rid, NULL);
  free(rid);
  return v;
}

static inline char *sample_body(const char *ssid, int seq) {
  char *b = xmalloc(512);
  snprintf(b, 512,
           "{\"sampling_session_id\":\"%s\",\"seq_id\":%d,\"num_samples\":1,"
           "\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2,3]}]},"
           "\"sampling_params\":{\"max_tokens\":3,\"seed\":7,\"temperature\":1.0,"
           "\"top_p\":0.9},\"type\":\"sample\"}", ssid, seq);
  return b;
}

/* The Tinkerbell dialect's poll of an async answer {request_id}, until it
 * is no longer 202; the caller frees the answer. */
static inline hc_t *tb_await(json_t *accepted) {
  char body[256];
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\"}",
           json_string_value(json_object_get(accepted, "request_id")));
  json_decref(accepted);
  for (;;) {
    hc_t *c = hc_do("POST", "/retrieve_future", NULL, body);
    if (c->status != 202)
      return c;
    hc_free(c);
    wait_ms(5);
  }
}

/* An async Tinkerbell call that must succeed. */
static inline void tb_async_ok(const char *path, const char *body) {
  hc_t *c = tb_await(post_json(path, NULL, body, 200));
  if (c->status != 200)
    fprintf(stderr, "%s -> %d %s\n", path, c->status, c->body);
  ASSERT_EQ_INT(c->status, 200);
  hc_free(c);
}

/* The adapter file of the Tinkerbell dialect's checkpoint name of model
 * (DIR/tb-<hex of the user>-<model>/weights/<name>/) into path (512). */
static inline void tb_adapter_file(char *path, const char *model, const char *name) {
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "ls -d %s/tb-*-%s/weights/%s", data_dir, model, name);
  FILE *p = popen(cmd, "r");
  ASSERT(p != NULL && fgets(path, 512, p) != NULL);
  pclose(p);
  path[strcspn(path, "\n")] = '\0';
  strcat(path, "/adapter_model.safetensors");
}

static inline long peak_rss_kib(void) {
  struct rusage ru;
  ASSERT_OK(getrusage(RUSAGE_SELF, &ru));
  return ru.ru_maxrss;
}

#endif /* TB_TEST_SERVER_HARDENING_H */
