/*
 * The server and its files, against what a crash, a damaged disk or a
 * probe leaves: a checkpoint whose metadata lies about its rank, the
 * leftovers of saves cut short by kill -9, and errors about checkpoints,
 * which must name the user's tinker:// path rather than where the server
 * keeps it.
 */
#include "test_server_hardening.h"

#include <stdarg.h>
#include <sys/wait.h>

#include "engine/checkpoint.h"
#include "server/store.h"

/* ------------------------------------------------------------ ranks */

/* The rank in a checkpoint's metadata sizes the adapter a load creates,
 * before any tensor is read: it must be the rank its tensors have.  (A
 * rank of 4096 over rank-4 tensors allocated some 800 MB.) */
TEST(checkpoint_rank_is_checked_against_its_tensors) {
  char *sid, *mid;
  start_training_with_model(&sid, &mid);
  char body[1024], path[512], tp[256];
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":1,\"path\":\"w\",\"type\":\"save_weights\"}", mid);
  json_decref(tinker_op("/api/v1/save_weights", body));
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"type\":\"unload_model\"}", mid);
  json_decref(tinker_op("/api/v1/unload_model", body));
  snprintf(path, sizeof(path), "sed -i 's/\"rank\": *4,/\"rank\":4096,/' '%s/%s/weights/w/%s'",
           data_dir, mid, TB_CKPT_META);
  ASSERT_OK(system(path));
  snprintf(path, sizeof(path), "grep -q '\"rank\":4096' '%s/%s/weights/w/%s'", data_dir, mid,
           TB_CKPT_META);
  ASSERT_OK(system(path));
  long rss0 = peak_rss_kib();
  snprintf(tp, sizeof(tp), "tinker://%s/weights/w", mid);
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":1,\"path\":\"%s\",\"type\":\"load_weights\"}",
           sid, tp);
  char *rid = post_field("/api/v1/load_weights", NULL, body, "request_id");
  char *msg = failure_of(rid, "user");
  ASSERT_STR_CONTAINS(msg, "has rank 4, but the checkpoint's metadata says 4096");
  ASSERT_STR_CONTAINS(msg, tp);
  free(msg);
  free(rid);
  ASSERT_LT(peak_rss_kib() - rss0, 64 * 1024);
  snprintf(body, sizeof(body), "{\"tinker_path\":\"%s\"}", tp);
  hc_expect("POST", "/api/v1/weights_info", NULL, body, 404, "says 4096");
  free(mid);
  free(sid);
  stop_training();
}

/* ------------------------------------------------------------ fault 8 */

static float ckpt_data[2][8];

static const char *crash_at;

static void crash_hook(const char *stage) {
  if (strcmp(stage, crash_at) == 0)
    _exit(3);
}

/* A small real checkpoint save into dir; with stage set, in a child that
 * dies at that stage, as a kill -9 would, leaving its temporary. */
static void save_ckpt(const char *dir, const char *stage) {
  char na[128], nb[128];
  ASSERT_OK(tb__peft_tensor_name(na, sizeof(na), 0, TB_LORA_Q, 0));
  ASSERT_OK(tb__peft_tensor_name(nb, sizeof(nb), 0, TB_LORA_Q, 1));
  tb__ckpt_tensor_t t[2] = {
    { na, 2, { 2, 4 }, ckpt_data[0], NULL, NULL },
    { nb, 2, { 4, 2 }, ckpt_data[1], NULL, NULL },
  };
  char *targets[] = { "q_proj" };
  tb__ckpt_info_t info = { .rank = 2, .alpha = 4, .targets = targets, .n_targets = 1,
                          .base_model = "base", .step = 1 };
  tb_error_t err = { 0 };
  if (stage == NULL) {
    ASSERT_OK(tb__ckpt_save(dir, t, 2, &info, 0, &err));
    return;
  }
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    crash_at = stage;
    tb__ckpt_test_hook = crash_hook;
    tb__ckpt_save(dir, t, 2, &info, 0, &err);
    _exit(0);
  }
  int status;
  ASSERT_EQ_INT(waitpid(pid, &status, 0), pid);
  ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 3);
}

/* How many entries of dir start with prefix. */
static int entries(const char *dir, const char *prefix) {
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "ls -a '%s' | grep -c '^%s' || true", dir, prefix);
  FILE *p = popen(cmd, "r");
  int n = -1;
  ASSERT(p != NULL && fscanf(p, "%d", &n) == 1);
  pclose(p);
  return n;
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void sh(const char *fmt, ...) {
  char cmd[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof(cmd), fmt, ap);
  va_end(ap);
  ASSERT_OK(system(cmd));
}

/* Saves cut short by a crash left ".NAME.tmp-XXXXXX" directories (and,
 * where two names cannot be exchanged, ".NAME.old-XXXXXX") that nothing
 * removed.  The server sweeps them when it starts: only directories with
 * exactly the names its saves make, only in the checkpoint directories
 * under its data directory, and an old checkpoint whose replacement never
 * made it goes back under its name. */
TEST(crash_leftovers_are_swept_at_start) {
  char root[] = "/tmp/tb-harden-sweep-XXXXXX";
  ASSERT(mkdtemp(root) != NULL);
  char dir[128], w[192], s[192], tbw[192], out[192], path[256];
  snprintf(dir, sizeof(dir), "%s/data", root);
  snprintf(w, sizeof(w), "%s/run:train:0/weights", dir);
  snprintf(s, sizeof(s), "%s/run:train:0/sampler_weights", dir);
  snprintf(tbw, sizeof(tbw), "%s/tb-6c6f63616c-m/weights", dir);
  snprintf(out, sizeof(out), "%s/outside/weights", root);
  sh("mkdir -p '%s' '%s'", w, s);
  sh("mkdir -p '%s' '%s'", tbw, out);
  /* Real leftovers: saves killed before and after their files were
   * written, one of them over an existing checkpoint. */
  snprintf(path, sizeof(path), "%s/ckpt", w);
  save_ckpt(path, NULL);
  save_ckpt(path, "rename");
  save_ckpt(path, TB_CKPT_WEIGHTS);
  snprintf(path, sizeof(path), "%s/new", w);
  save_ckpt(path, TB_CKPT_META);
  ASSERT_EQ_INT(entries(w, ".ckpt.tmp-"), 2);
  ASSERT_EQ_INT(entries(w, ".new.tmp-"), 1);
  /* A checkpoint moved aside whose replacement never arrived, and one
   * whose replacement did. */
  snprintf(path, sizeof(path), "%s/.s.old-Ab12Cd", s);
  save_ckpt(path, NULL);
  snprintf(path, sizeof(path), "%s/.ckpt.old-Zz99Yy", w);
  save_ckpt(path, NULL);
  sh("mkdir '%s/.w.tmp-Q1w2E3' && touch '%s/.w.tmp-Q1w2E3/adapter_model.safetensors'", tbw,
     tbw);
  /* Not the server's: other names, a file, a link, other places. */
  sh("mkdir '%s/.ckpt.tmp-short' '%s/.ckpt.tmp-AB_DEF'", w, w);
  sh("mkdir '%s/notes.tmp-ABCDEF' && touch '%s/.f.tmp-ABCDEF'", w, w);
  sh("mkdir '%s/.x.tmp-ABCDEF' && touch '%s/.x.tmp-ABCDEF/keep'", out, out);
  sh("ln -s '%s/.x.tmp-ABCDEF' '%s/.l.tmp-ABCDEF'", out, w);
  sh("mkdir '%s/run:train:0/.weights.tmp-ABCDEF' '%s/.hidden'", dir, dir);
  sh("mkdir -p '%s/.hidden/weights/.h.tmp-ABCDEF'", dir);

  tb_server_options_t o = { .data_dir = dir };
  start_server(&o);
  RUN_UNTIL(tb__store_state(srv->store) != 0);
  ASSERT_EQ_INT(tb__store_state(srv->store), 1);
  ASSERT_EQ_INT(entries(w, ".ckpt.tmp-"), 2);  /* -short and -AB_DEF */
  ASSERT_EQ_INT(entries(w, ".ckpt.tmp-short"), 1);
  ASSERT_EQ_INT(entries(w, ".ckpt.tmp-AB_DEF"), 1);
  ASSERT_EQ_INT(entries(w, ".new.tmp-"), 0);
  ASSERT_EQ_INT(entries(w, ".ckpt.old-"), 0);
  ASSERT_EQ_INT(entries(s, ".s.old-"), 0);
  ASSERT_EQ_INT(entries(tbw, ".w.tmp-"), 0);
  ASSERT_EQ_INT(entries(w, "notes.tmp-ABCDEF"), 1);
  ASSERT_EQ_INT(entries(w, ".f.tmp-ABCDEF"), 1);
  ASSERT_EQ_INT(entries(w, ".l.tmp-ABCDEF"), 1);
  snprintf(path, sizeof(path), "%s/.x.tmp-ABCDEF", out);
  ASSERT_EQ_INT(entries(path, "keep"), 1);
  snprintf(path, sizeof(path), "%s/run:train:0", dir);
  ASSERT_EQ_INT(entries(path, ".weights.tmp-ABCDEF"), 1);
  snprintf(path, sizeof(path), "%s/.hidden/weights", dir);
  ASSERT_EQ_INT(entries(path, ".h.tmp-ABCDEF"), 1);
  /* The checkpoints are whole: the one in place, and the one put back. */
  tb_error_t err = { 0 };
  tb__ckpt_info_t info = { 0 };
  snprintf(path, sizeof(path), "%s/ckpt", w);
  ASSERT_OK(tb__ckpt_read_info(path, &info, &err));
  tb__ckpt_info_free(&info);
  snprintf(path, sizeof(path), "%s/s", s);
  ASSERT_OK(tb__ckpt_read_info(path, &info, &err));
  ASSERT_EQ_INT(info.rank, 2);
  tb__ckpt_info_free(&info);
  stop_server();

  /* What saves of a running server hold is newer than its start, and is
   * left alone. */
  struct timespec before;
  ASSERT_OK(clock_gettime(CLOCK_REALTIME, &before));
  before.tv_sec -= 5;
  snprintf(path, sizeof(path), "%s/live", w);
  save_ckpt(path, "rename");
  size_t removed = 0, restored = 0;
  ASSERT_OK(tb__ckpt_sweep(w, &before, &removed, &restored));
  ASSERT_EQ_INT(removed + restored, 0);
  ASSERT_EQ_INT(entries(w, ".live.tmp-"), 1);
  ASSERT_OK(clock_gettime(CLOCK_REALTIME, &before));
  ASSERT_OK(tb__ckpt_sweep(w, &before, &removed, &restored));
  ASSERT_EQ_INT(removed, 1);
  ASSERT_EQ_INT(entries(w, ".live.tmp-"), 0);
  sh("rm -rf '%s'", root);
}

/* ------------------------------------------------------------ fault 9 */

/* An error message must name what the user sent, never where the server
 * keeps it: no data directory, no absolute path. */
static void no_server_path(const char *msg, const char *want) {
  if (strstr(msg, data_dir) != NULL || strstr(msg, "/tmp/") != NULL || msg[0] == '/')
    tb_test_fail(__FILE__, __LINE__, "a server path in \"%s\"", msg);
  if (want != NULL && strstr(msg, want) == NULL)
    tb_test_fail(__FILE__, __LINE__, "\"%s\" does not name %s", msg, want);
}

/* The message of a failed Tinker future, checked. */
static void failed_op(const char *path, const char *body, const char *want) {
  char *rid = post_field(path, NULL, body, "request_id");
  char *msg = failure_of(rid, "user");
  no_server_path(msg, want);
  free(msg);
  free(rid);
}

/* A sampling session over the checkpoint tp (seq_id seq of session sid):
 * refused, or its sample failed, with an error that shows no server
 * path. */
static void sampling_over(const char *sid, int seq, const char *tp) {
  char body[1024];
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"sampling_session_seq_id\":%d,\"model_path\":\"%s\","
           "\"type\":\"create_sampling_session\"}", sid, seq, tp);
  hc_t *c = hc_do("POST", "/api/v1/create_sampling_session", NULL, body);
  if (c->status == 200) {
    char *ssid = field_of(c, "sampling_session_id");
    char *sb = sample_body(ssid, 0);
    failed_op("/api/v1/asample", sb, tp);
    free(sb);
    free(ssid);
  } else {
    json_t *v = hc_json(c);
    no_server_path(json_string_value(json_object_get(v, "error")), tp);
    json_decref(v);
  }
  hc_free(c);
}

/* Every error built from a checkpoint the user named: a load of one that
 * is missing or corrupt, its weights_info, a sampling session over it, a
 * model created from it, the same in the Tinkerbell dialect, and the REST
 * routes over its files.  The probe found "model_path: /srv/.../data/...:
 * not a checkpoint". */
TEST(errors_name_the_users_path) {
  char *sid, *mid;
  start_training_with_model(&sid, &mid);
  char body[1024], tp[256], path[512];
  int seq = 1;
  /* A good checkpoint and sampler weights, then corrupt copies. */
  static const char *const names[] = { "bad", "badmeta", "good" };
  for (size_t i = 0; i < 3; i++) {
    snprintf(body, sizeof(body),
             "{\"model_id\":\"%s\",\"seq_id\":%d,\"path\":\"%s\",\"type\":\"save_weights\"}",
             mid, seq++, names[i]);
    json_decref(tinker_op("/api/v1/save_weights", body));
  }
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":%d,\"path\":\"sbad\","
           "\"type\":\"save_weights_for_sampler\"}", mid, seq++);
  json_decref(tinker_op("/api/v1/save_weights_for_sampler", body));
  snprintf(path, sizeof(path), "%s/%s/weights/bad/adapter_model.safetensors", data_dir, mid);
  ASSERT_OK(truncate(path, 20));
  snprintf(path, sizeof(path), "%s/%s/weights/badmeta/checkpoint.json", data_dir, mid);
  FILE *f = fopen(path, "w");
  fputs("{\"format\":", f);
  fclose(f);
  snprintf(path, sizeof(path), "%s/%s/sampler_weights/sbad/adapter_config.json", data_dir, mid);
  ASSERT_OK(unlink(path));

  /* load_weights: missing, corrupt tensors, corrupt metadata. */
  static const char *const loads[] = { "nothere", "bad", "badmeta" };
  for (size_t i = 0; i < 3; i++) {
    snprintf(tp, sizeof(tp), "tinker://%s/weights/%s", mid, loads[i]);
    snprintf(body, sizeof(body),
             "{\"model_id\":\"%s\",\"seq_id\":%d,\"path\":\"%s\",\"type\":\"load_weights\"}",
             mid, seq++, tp);
    failed_op("/api/v1/load_weights", body, tp);
  }
  /* weights_info of a corrupt checkpoint of a model no longer loaded
   * (a loaded one's shape is known without reading it). */
  char *mid2 = create_model(sid, 3, NULL);
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":1,\"path\":\"gone\",\"type\":\"save_weights\"}",
           mid2);
  json_decref(tinker_op("/api/v1/save_weights", body));
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"type\":\"unload_model\"}", mid2);
  json_decref(tinker_op("/api/v1/unload_model", body));
  snprintf(path, sizeof(path), "%s/%s/weights/gone/checkpoint.json", data_dir, mid2);
  f = fopen(path, "w");
  fputs("[]", f);
  fclose(f);
  snprintf(tp, sizeof(tp), "tinker://%s/weights/gone", mid2);
  snprintf(body, sizeof(body), "{\"tinker_path\":\"%s\"}", tp);
  hc_t *c = hc_do("POST", "/api/v1/weights_info", NULL, body);
  ASSERT_GE(c->status, 400);
  json_t *v = hc_json(c);
  no_server_path(json_string_value(json_object_get(v, "error")), tp);
  json_decref(v);
  hc_free(c);
  /* A sampling session and a model created over it. */
  sampling_over(sid, 1, tp);
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":4,\"path\":\"%s\",\"type\":\"load_weights\"}",
           sid, tp);
  failed_op("/api/v1/load_weights", body, tp);
  free(mid2);
  /* A sampling session over broken sampler weights. */
  snprintf(tp, sizeof(tp), "tinker://%s/sampler_weights/sbad", mid);
  sampling_over(sid, 0, tp);
  /* A model created from a corrupt checkpoint. */
  snprintf(tp, sizeof(tp), "tinker://%s/weights/badmeta", mid);
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":1,\"path\":\"%s\",\"type\":\"load_weights\"}",
           sid, tp);
  failed_op("/api/v1/load_weights", body, tp);
  snprintf(tp, sizeof(tp), "tinker://%s/weights/bad", mid);
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":2,\"path\":\"%s\",\"type\":\"load_weights\"}",
           sid, tp);
  failed_op("/api/v1/load_weights", body, tp);

  /* The Tinkerbell dialect. */
  const char *fb = "{\"model_id\":\"tbm\",\"data\":[[{\"role\":\"user\",\"content\":\"hi\"}]]}";
  json_decref(post_json("/api/v1/forward_backward", NULL, fb, 200));
  tb_async_ok("/api/v1/save_weights", "{\"model_id\":\"tbm\",\"path\":\"w\"}");
  tb_adapter_file(path, "tbm", "w");
  ASSERT_OK(truncate(path, 20));
  static const char *const tbloads[][2] = {
    { "{\"model_id\":\"tbm\",\"path\":\"w\"}", "tinkerbell://tbm/weights/w" },
    { "{\"model_id\":\"tbm\",\"path\":\"nothere\"}", "tinkerbell://tbm/weights/nothere" },
    { "{\"model_id\":\"tbm2\",\"path\":\"tinkerbell://tbm/weights/w\"}",
      "tinkerbell://tbm/weights/w" },
  };
  for (size_t i = 0; i < 3; i++) {
    c = hc_do("POST", "/api/v1/load_weights", NULL, tbloads[i][0]);
    if (c->status == 200) {
      v = hc_json(c);
      hc_free(c);
      c = tb_await(v);
    }
    v = hc_json(c);
    no_server_path(json_string_value(json_object_get(v, "error")), tbloads[i][1]);
    json_decref(v);
    hc_free(c);
  }

  /* REST: the archive of a checkpoint whose files went away. */
  snprintf(path, sizeof(path), "rm -rf '%s/%s/weights/good'", data_dir, mid);
  ASSERT_OK(system(path));
  snprintf(path, sizeof(path), "/api/v1/training_runs/%s/checkpoints/weights/good/archive",
           mid);
  RUN_UNTIL(tb__store_state(srv->store) != 0);
  c = hc_do("GET", path, NULL, NULL);
  ASSERT_EQ_INT(c->status, 200);
  v = hc_json(c);
  hc_free(c);
  const char *url = json_string_value(json_object_get(v, "url"));
  ASSERT(url != NULL && strncmp(url, "http://t/", 9) == 0);
  c = hc_do("GET", url + 8, NULL, NULL);
  json_decref(v);
  ASSERT_GE(c->status, 400);
  v = hc_json(c);
  no_server_path(json_string_value(json_object_get(v, "error")), NULL);
  json_decref(v);
  hc_free(c);
  /* The rewriting itself, on messages of every shape it meets. */
  ASSERT_OK(tb__server_name_path(srv, "/models/smol/", "smol"));
  static const char *const cases[][2] = {
    { "%s/r:train:1/weights/c: not a checkpoint",
      "tinker://r:train:1/weights/c: not a checkpoint" },
    { "cannot open %s/r/sampler_weights/s/adapter_config.json: No such file",
      "cannot open tinker://r/sampler_weights/s/adapter_config.json: No such file" },
    { "%s/tb-616c696365-my.model/weights/w (x)", "tinkerbell://my.model/weights/w (x)" },
    { "\"%s/r/weights/.c.tmp-Ab12Cd/optimizer.safetensors\": write failed",
      "\"tinker://r/weights/c/optimizer.safetensors\": write failed" },
    { "cannot open the database %s/tinkerbell.db: locked",
      "cannot open the database the server's database: locked" },
    { "cannot create %s: Permission denied",
      "cannot create the data directory: Permission denied" },
    { "/models/smol/model.safetensors: header is not JSON",
      "smol/model.safetensors: header is not JSON" },
    { "two: %s/a/weights/x, %s/b/weights/y", "two: tinker://a/weights/x, tinker://b/weights/y" },
    { "no path here: /models/smolder/x", "no path here: /models/smolder/x" },
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char in[512];
    snprintf(in, sizeof(in), cases[i][0], data_dir, data_dir);
    char *outp = tb__server_user_paths(srv, in);
    ASSERT_STR_EQ(outp, cases[i][1]);
    free(outp);
  }
  free(mid);
  free(sid);
  stop_training();
}

TEST_LIST(
  TEST_ENTRY(checkpoint_rank_is_checked_against_its_tensors),
  TEST_ENTRY(crash_leftovers_are_swept_at_start),
  TEST_ENTRY(errors_name_the_users_path),
)
