/*
 * Persistence and the REST routes over loopback: training runs and
 * checkpoints listed from the database, delete, publish, ttl (and its
 * sweep), the archive link and the tar behind it, every route's bad
 * input, two users who cannot see each other's runs, and a restart on the
 * same data_dir after which the old runs, checkpoints and sessions are
 * still listed and the old tinker:// paths still load.
 */
/* The shared helpers include some this file has no use for. */
#pragma GCC diagnostic ignored "-Wunused-function"
#include "test_server_training.h"

#include "server/store.h"

#include <sys/wait.h>

/* The server closed, its loop kept for the next one. */
static void close_server_keep_loop(void) {
  tb_server_close(&server, on_server_closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(server_closed, 1);
  ASSERT(server.impl_ == NULL);
}

/* A new server (and training part) on the same loop and data_dir. */
static void reopen_training(tb_server_options_t *o) {
  o->data_dir = data_dir;
  open_server(o);
  tb__engine_opts_t eo = { .shards = 2 };
  tb_error_t err = { 0 };
  ASSERT_OK(tb__training_start(srv, &eo, NULL, 0, &err));
}

/* GET path answered 200, as JSON. */
static json_t *get_json(const char *path, const char *extra) {
  hc_t *c = hc_do("GET", path, extra, NULL);
  if (c->status != 200)
    fprintf(stderr, "GET %s -> %d %s\n", path, c->status, c->body);
  ASSERT_EQ_INT(c->status, 200);
  json_t *v = hc_json(c);
  hc_free(c);
  return v;
}

/* A save (kind "save_weights" or "save_weights_for_sampler"), awaited;
 * ttl 0 sends none.  Returns the tinker path. */
static char *save(const char *mid, int seq, const char *kind, const char *name, int ttl,
                  const char *extra) {
  char body[512], ttl_field[48] = "";
  if (ttl > 0)
    snprintf(ttl_field, sizeof(ttl_field), ",\"ttl_seconds\":%d", ttl);
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"seq_id\":%d,\"path\":\"%s\"%s}", mid,
           seq, name, ttl_field);
  char path[64];
  snprintf(path, sizeof(path), "/api/v1/%s", kind);
  char *rid = post_field(path, extra, body, "request_id");
  json_t *v = result_json(rid, extra);
  char *p = xstrdup(json_string_value(json_object_get(v, "path")));
  json_decref(v);
  free(rid);
  return p;
}

/* /api/v1/training_runs/<mid>/checkpoints/<rest> */
static char *ckpt_url(const char *mid, const char *rest) {
  char *u = xmalloc(512);
  snprintf(u, 512, "/api/v1/training_runs/%s/checkpoints/%s", mid, rest);
  return u;
}

static int dir_exists(const char *mid, const char *kind, const char *name) {
  char dir[512];
  struct stat st;
  snprintf(dir, sizeof(dir), "%s/%s/%s/%s", data_dir, mid, kind, name);
  return stat(dir, &st) == 0;
}

/* The number of entries of a list answer. */
static size_t list_size(const char *path, const char *key, const char *extra,
                        json_int_t *total) {
  json_t *v = get_json(path, extra);
  size_t n = json_array_size(json_object_get(v, key));
  if (total != NULL)
    *total = json_integer_value(json_object_get(json_object_get(v, "cursor"), "total_count"));
  json_decref(v);
  return n;
}

TEST(runs_and_checkpoints) {
  char *sid, *mid;
  start_training_with_model(&sid, &mid);
  fwdbwd_done(mid, 1);
  char *wpath = save(mid, 2, "save_weights", "w1", 0, NULL);
  char *spath = save(mid, 3, "save_weights_for_sampler", "s1", 0, NULL);

  /* The run, as TrainingRun. */
  json_int_t total = -1;
  ASSERT_EQ_INT(list_size("/api/v1/training_runs", "training_runs", NULL, &total), 1);
  ASSERT_EQ_INT(total, 1);
  json_t *v = get_json("/api/v1/training_runs?limit=5&offset=0", NULL);
  json_t *run = json_array_get(json_object_get(v, "training_runs"), 0);
  ASSERT_STR_EQ(json_string_value(json_object_get(run, "training_run_id")), mid);
  ASSERT_STR_EQ(json_string_value(json_object_get(run, "base_model")), "base");
  ASSERT_STR_EQ(json_string_value(json_object_get(run, "model_owner")), "local");
  ASSERT(json_is_true(json_object_get(run, "is_lora")));
  ASSERT(json_is_false(json_object_get(run, "corrupted")));
  ASSERT_EQ_INT(json_integer_value(json_object_get(run, "lora_rank")), 4);
  ASSERT_STR_CONTAINS(json_string_value(json_object_get(run, "last_request_time")), "Z");
  ASSERT_STR_EQ(json_string_value(json_object_get(json_object_get(run, "last_checkpoint"),
                                                  "checkpoint_id")),
                "weights/w1");
  ASSERT_STR_EQ(json_string_value(json_object_get(
                    json_object_get(run, "last_sampler_checkpoint"), "tinker_path")),
                spath);
  ASSERT_EQ_INT(json_integer_value(json_object_get(json_object_get(v, "cursor"), "limit")), 5);
  json_decref(v);
  ASSERT_EQ_INT(list_size("/api/v1/training_runs?offset=1", "training_runs", NULL, &total), 0);
  ASSERT_EQ_INT(total, 1);

  char url[512];
  snprintf(url, sizeof(url), "/api/v1/training_runs/%s", mid);
  v = get_json(url, NULL);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "training_run_id")), mid);
  json_decref(v);

  /* Its checkpoints, newest first, and the user's. */
  snprintf(url, sizeof(url), "/api/v1/training_runs/%s/checkpoints", mid);
  v = get_json(url, NULL);
  json_t *list = json_object_get(v, "checkpoints");
  ASSERT_EQ_INT(json_array_size(list), 2);
  json_t *c0 = json_array_get(list, 0), *c1 = json_array_get(list, 1);
  ASSERT_STR_EQ(json_string_value(json_object_get(c0, "checkpoint_id")), "sampler_weights/s1");
  ASSERT_STR_EQ(json_string_value(json_object_get(c0, "checkpoint_type")), "sampler");
  ASSERT_STR_EQ(json_string_value(json_object_get(c1, "checkpoint_type")), "training");
  ASSERT_STR_EQ(json_string_value(json_object_get(c1, "tinker_path")), wpath);
  ASSERT_GT(json_integer_value(json_object_get(c1, "size_bytes")), 1000);
  ASSERT(json_is_false(json_object_get(c1, "public")));
  ASSERT(json_is_null(json_object_get(c1, "expires_at")));
  ASSERT_STR_CONTAINS(json_string_value(json_object_get(c1, "time")), "T");
  json_decref(v);
  ASSERT_EQ_INT(list_size("/api/v1/checkpoints", "checkpoints", NULL, &total), 2);
  ASSERT_EQ_INT(list_size("/api/v1/checkpoints?limit=1&offset=1", "checkpoints", NULL, &total),
                1);
  ASSERT_EQ_INT(total, 2);

  /* Bad input: 400 with the field, unknown things 404. */
  hc_expect("GET", "/api/v1/training_runs?limit=0", NULL, NULL, 400, "limit: expected");
  hc_expect("GET", "/api/v1/training_runs?limit=abc", NULL, NULL, 400, "limit:");
  hc_expect("GET", "/api/v1/training_runs?offset=-1", NULL, NULL, 400, "offset:");
  hc_expect("GET", "/api/v1/training_runs?access_scope=all", NULL, NULL, 400,
            "access_scope: expected owned or accessible");
  hc_expect("GET", "/api/v1/checkpoints?limit=1001", NULL, NULL, 400, "limit:");
  hc_expect("GET", "/api/v1/training_runs/nope", NULL, NULL, 404, "run_id: no training run");
  hc_expect("GET", "/api/v1/training_runs/%2E%2E", NULL, NULL, 400, "run_id: '..'");
  hc_expect("GET", "/api/v1/training_runs/a%2Fb/checkpoints", NULL, NULL, 400, "run_id:");
  hc_expect("GET", "/api/v1/training_runs/nope/checkpoints", NULL, NULL, 404, "run_id:");
  char *u = ckpt_url(mid, "weights/%2E%2E");
  hc_expect("DELETE", u, NULL, NULL, 400, "name: '..' is not allowed");
  free(u);
  u = ckpt_url(mid, "other/w1");
  hc_expect("DELETE", u, NULL, NULL, 400, "checkpoint_id: expected weights/<name>");
  free(u);
  u = ckpt_url(mid, "weights/nothere");
  hc_expect("DELETE", u, NULL, NULL, 404, "checkpoint_id: no checkpoint weights/nothere");
  free(u);
  u = ckpt_url(mid, "weights/w1/ttl");
  hc_expect("PUT", u, NULL, "{\"ttl_seconds\":0}", 400, "ttl_seconds: expected a positive");
  hc_expect("PUT", u, NULL, "{\"ttl_seconds\":\"1\"}", 400, "ttl_seconds: expected an integer");
  hc_expect("PUT", u, NULL, "{}", 400, "ttl_seconds: required");
  hc_expect("PUT", u, NULL, "[1]", 400, NULL);
  hc_expect("PUT", u, NULL, "{\"ttl_seconds\":null}", 200, "\"expires_at\":null");
  free(u);
  u = ckpt_url("nope", "weights/w1/ttl");
  hc_expect("PUT", u, NULL, "{\"ttl_seconds\":60}", 404, "checkpoint_id:");
  free(u);
  hc_expect("GET", "/api/v1/checkpoint_archives/arc-nothing", NULL, NULL, 404, "token:");
  hc_expect("GET",
            "/api/v1/checkpoint_archives/arc-00000000000000000000000000000000", NULL, NULL, 404,
            "token: unknown or expired");

  /* Publish and unpublish: 409 when already so. */
  u = ckpt_url(mid, "weights/w1/publish");
  hc_expect("POST", u, NULL, NULL, 200, "\"public\":true");
  hc_expect("POST", u, NULL, NULL, 409, "already public");
  snprintf(url, sizeof(url), "/api/v1/training_runs/%s/checkpoints", mid);
  v = get_json(url, NULL);
  ASSERT(json_is_true(json_object_get(json_array_get(json_object_get(v, "checkpoints"), 1),
                                      "public")));
  json_decref(v);
  hc_expect("DELETE", u, NULL, NULL, 200, "\"public\":false");
  hc_expect("DELETE", u, NULL, NULL, 409, "already private");
  free(u);

  /* The archive link, and the tar behind it (no API key needed). */
  u = ckpt_url(mid, "weights/w1/archive");
  v = get_json(u, NULL);
  free(u);
  const char *link = json_string_value(json_object_get(v, "url"));
  ASSERT(link != NULL);
  ASSERT(json_string_value(json_object_get(v, "expires")) != NULL);
  ASSERT(strncmp(link, "http://t/api/v1/checkpoint_archives/arc-", 40) == 0);
  hc_t *c = hc_do("GET", link + strlen("http://t"), NULL, NULL);
  json_decref(v);
  ASSERT_EQ_INT(c->status, 200);
  ASSERT_STR_CONTAINS(c->head, "application/x-tar");
  ASSERT_STR_CONTAINS(c->head, "filename=\"w1.tar\"");
  ASSERT_EQ_INT(c->body_len % 512, 0);
  ASSERT(memcmp(c->body + 257, "ustar", 5) == 0);
  char tarfile[] = "/tmp/tb-rest-tar-XXXXXX";
  int fd = mkstemp(tarfile);
  ASSERT(fd >= 0);
  ASSERT_EQ_INT(write(fd, c->body, c->body_len), (long)c->body_len);
  close(fd);
  hc_free(c);
  char cmd[512], listing[2048] = "";
  snprintf(cmd, sizeof(cmd), "tar -tvf %s", tarfile);
  FILE *p = popen(cmd, "r");
  ASSERT(p != NULL);
  size_t got = fread(listing, 1, sizeof(listing) - 1, p);
  listing[got] = '\0';
  ASSERT_OK(pclose(p));
  unlink(tarfile);
  ASSERT_STR_CONTAINS(listing, "w1/adapter_model.safetensors");
  ASSERT_STR_CONTAINS(listing, "w1/adapter_config.json");
  ASSERT_STR_CONTAINS(listing, "w1/optimizer.safetensors");

  /* Delete: the files go, the listing shrinks, the path no longer loads. */
  ASSERT(dir_exists(mid, "weights", "w1"));
  u = ckpt_url(mid, "weights/w1");
  hc_expect("DELETE", u, NULL, NULL, 200, "\"deleted\":true");
  ASSERT(!dir_exists(mid, "weights", "w1"));
  hc_expect("DELETE", u, NULL, NULL, 404, "no checkpoint");
  free(u);
  ASSERT_EQ_INT(list_size("/api/v1/checkpoints", "checkpoints", NULL, NULL), 1);
  char body[512];
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"seq_id\":4,\"path\":\"%s\"}", mid,
           wpath);
  char *rid = post_field("/api/v1/load_weights", NULL, body, "request_id");
  free(failure_of(rid, "user"));
  free(rid);
  v = get_json("/api/v1/training_runs", NULL);
  run = json_array_get(json_object_get(v, "training_runs"), 0);
  ASSERT(json_is_null(json_object_get(run, "last_checkpoint")));
  json_decref(v);

  /* A step that failed for a server reason marks the run corrupted. */
  tb__store_run_corrupted(srv->store, mid);
  snprintf(url, sizeof(url), "/api/v1/training_runs/%s", mid);
  hc_expect("GET", url, NULL, NULL, 200, "\"corrupted\":true");

  /* GET / lists the routes. */
  hc_expect("GET", "/", NULL, NULL, 200, "/api/v1/training_runs/{run_id}/checkpoints");

  free(wpath);
  free(spath);
  free(mid);
  free(sid);
  stop_training();
}

TEST(users_see_their_own) {
  char keys[] = "/tmp/tb-keys-XXXXXX";
  start_training_with_keys(keys, "tml-a1 alice\ntml-b1 bob\n");
  const char *alice = "X-API-Key: tml-a1\r\n", *bob = "X-API-Key: tml-b1\r\n";
  char *sid = create_session(alice);
  char *mid = create_model(sid, 0, alice);
  char *spath = save(mid, 1, "save_weights_for_sampler", "s1", 0, alice);
  char *wpath = save(mid, 2, "save_weights", "w1", 0, alice);

  hc_expect("GET", "/api/v1/training_runs", NULL, NULL, 401, "API key");
  ASSERT_EQ_INT(list_size("/api/v1/training_runs", "training_runs", alice, NULL), 1);
  ASSERT_EQ_INT(list_size("/api/v1/training_runs", "training_runs", bob, NULL), 0);
  ASSERT_EQ_INT(list_size("/api/v1/checkpoints", "checkpoints", bob, NULL), 0);
  char url[512];
  snprintf(url, sizeof(url), "/api/v1/training_runs/%s", mid);
  hc_expect("GET", url, bob, NULL, 404, "run_id: no training run");
  snprintf(url, sizeof(url), "/api/v1/training_runs/%s/checkpoints", mid);
  hc_expect("GET", url, bob, NULL, 404, "run_id:");
  const char *rests[] = { "weights/w1", "weights/w1/archive", "weights/w1/publish" };
  const char *methods[] = { "DELETE", "GET", "POST" };
  for (size_t i = 0; i < 3; i++) {
    char *u = ckpt_url(mid, rests[i]);
    hc_expect(methods[i], u, bob, NULL, 404, "checkpoint_id: no checkpoint");
    free(u);
  }
  char *u = ckpt_url(mid, "weights/w1/ttl");
  hc_expect("PUT", u, bob, "{\"ttl_seconds\":5}", 404, "no checkpoint");
  free(u);

  /* Bob cannot sample alice's private weights... */
  char *bsid = create_session(bob);
  char body[512];
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"sampling_session_seq_id\":0,\"model_path\":\"%s\"}", bsid,
           spath);
  hc_expect("POST", "/api/v1/create_sampling_session", bob, body, 404,
            "model_path: no such checkpoint");
  /* ...until she publishes them: then he sees them and the run. */
  u = ckpt_url(mid, "sampler_weights/s1/publish");
  hc_expect("POST", u, alice, NULL, 200, "\"public\":true");
  hc_expect("POST", "/api/v1/create_sampling_session", bob, body, 200,
            "\"sampling_session_id\"");
  snprintf(url, sizeof(url), "/api/v1/training_runs/%s?access_scope=accessible", mid);
  hc_expect("GET", url, bob, NULL, 200, "\"model_owner\":\"alice\"");
  snprintf(url, sizeof(url), "/api/v1/training_runs/%s", mid);
  hc_expect("GET", url, bob, NULL, 404, "run_id:");
  ASSERT_EQ_INT(
      list_size("/api/v1/training_runs?access_scope=accessible", "training_runs", bob, NULL), 1);
  snprintf(url, sizeof(url), "/api/v1/training_runs/%s/checkpoints", mid);
  ASSERT_EQ_INT(list_size(url, "checkpoints", bob, NULL), 1);  /* the public one only */
  ASSERT_EQ_INT(list_size(url, "checkpoints", alice, NULL), 2);
  /* He may download it; the link needs no key. */
  char *au = ckpt_url(mid, "sampler_weights/s1/archive");
  json_t *v = get_json(au, bob);
  free(au);
  const char *link = json_string_value(json_object_get(v, "url"));
  ASSERT(link != NULL && strncmp(link, "http://t/", 9) == 0);
  hc_t *c = hc_do("GET", link + strlen("http://t"), NULL, NULL);
  ASSERT_EQ_INT(c->status, 200);
  ASSERT_STR_CONTAINS(c->head, "filename=\"s1.tar\"");
  hc_free(c);
  json_decref(v);
  /* Public is not his: he cannot unpublish, delete or change it. */
  hc_expect("DELETE", u, bob, NULL, 404, "no checkpoint");
  char *du = ckpt_url(mid, "sampler_weights/s1");
  hc_expect("DELETE", du, bob, NULL, 404, "no checkpoint");
  free(du);
  /* Private again: refused again. */
  hc_expect("DELETE", u, alice, NULL, 200, "\"public\":false");
  free(u);
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"sampling_session_seq_id\":1,\"model_path\":\"%s\"}", bsid,
           spath);
  hc_expect("POST", "/api/v1/create_sampling_session", bob, body, 404,
            "model_path: no such checkpoint");
  ASSERT_EQ_INT(list_size("/api/v1/checkpoints", "checkpoints", alice, NULL), 2);

  free(bsid);
  free(wpath);
  free(spath);
  free(mid);
  free(sid);
  stop_training();
  unlink(keys);
}

TEST(ttl_expiry) {
  char *sid, *mid;
  start_training_with_model(&sid, &mid);
  char body[512];
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":1,\"path\":\"x\",\"ttl_seconds\":0}", mid);
  hc_expect("POST", "/api/v1/save_weights", NULL, body, 400, "ttl_seconds:");
  /* One with a ttl of a second, one set to a second later, one kept. */
  char *p1 = save(mid, 1, "save_weights", "short", 1, NULL);
  char *p2 = save(mid, 2, "save_weights_for_sampler", "later", 0, NULL);
  char *p3 = save(mid, 3, "save_weights", "kept", 3600, NULL);
  json_t *v = get_json("/api/v1/checkpoints", NULL);
  size_t i;
  json_t *x;
  int with_expiry = 0;
  json_array_foreach(json_object_get(v, "checkpoints"), i, x)
    with_expiry += json_is_string(json_object_get(x, "expires_at"));
  ASSERT_EQ_INT(with_expiry, 2);
  json_decref(v);
  char *u = ckpt_url(mid, "sampler_weights/later/ttl");
  hc_expect("PUT", u, NULL, "{\"ttl_seconds\":1}", 200, "\"expires_at\":\"");
  free(u);
  char url[512];
  snprintf(url, sizeof(url), "/api/v1/training_runs/%s", mid);
  v = get_json(url, NULL);
  char *last0 = xstrdup(json_string_value(json_object_get(v, "last_request_time")));
  json_decref(v);
  /* The sweep removes both (files and rows) once they expire; a busy
   * machine may take its time. */
  uint64_t deadline = uv_now(&loop) + 60000;
  while ((dir_exists(mid, "weights", "short") || dir_exists(mid, "sampler_weights", "later")) &&
         uv_now(&loop) < deadline)
    wait_ms(100);
  ASSERT(!dir_exists(mid, "weights", "short"));
  ASSERT(!dir_exists(mid, "sampler_weights", "later"));
  ASSERT(dir_exists(mid, "weights", "kept"));
  v = get_json("/api/v1/checkpoints", NULL);
  ASSERT_EQ_INT(json_array_size(json_object_get(v, "checkpoints")), 1);
  ASSERT_STR_EQ(json_string_value(json_object_get(
                    json_array_get(json_object_get(v, "checkpoints"), 0), "tinker_path")),
                p3);
  json_decref(v);
  /* A request of the run, a second or more later, is its last one. */
  fwdbwd_done(mid, 4);
  v = get_json(url, NULL);
  ASSERT_LT(strcmp(last0, json_string_value(json_object_get(v, "last_request_time"))), 0);
  json_decref(v);
  free(last0);
  free(p1);
  free(p2);
  free(p3);
  free(mid);
  free(sid);
  /* The sweep's timer (waiting an hour for "kept") does not hold the
   * close up. */
  stop_training();
}

TEST(restart_keeps_runs_checkpoints_and_sessions) {
  char keys[] = "/tmp/tb-keys-XXXXXX";
  tb_test_temp_file(keys, "tml-a1 alice\ntml-b1 bob\n");
  const char *alice = "X-API-Key: tml-a1\r\n", *bob = "X-API-Key: tml-b1\r\n";
  tb_server_options_t o = { .api_keys_file = keys };
  start_training(&o);
  char *sid = create_session(alice);
  char *mid = create_model(sid, 0, alice);
  char *rid = submit_fwdbwd(mid, 1, alice);
  json_decref(result_json(rid, alice));
  free(rid);
  char *wpath = save(mid, 2, "save_weights", "w1", 0, alice);
  char *spath = save(mid, 3, "save_weights_for_sampler", "s1", 0, alice);
  char body[768];
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"sampling_session_seq_id\":0,\"base_model\":\"base\"}",
           sid);
  char *smp0 = post_field("/api/v1/create_sampling_session", alice, body, "sampling_session_id");
  char *bsid = create_session(bob);
  close_server_keep_loop();

  tb_server_options_t o2 = { .api_keys_file = keys };
  reopen_training(&o2);
  /* Queued behind the reading of the database, so answered after it. */
  json_int_t total = 0;
  ASSERT_EQ_INT(list_size("/api/v1/training_runs", "training_runs", alice, &total), 1);
  ASSERT_EQ_INT(total, 1);
  ASSERT_EQ_INT(list_size("/api/v1/training_runs", "training_runs", bob, NULL), 0);
  char url[512];
  snprintf(url, sizeof(url), "/api/v1/training_runs/%s/checkpoints", mid);
  ASSERT_EQ_INT(list_size(url, "checkpoints", alice, NULL), 2);
  /* The sessions, with what they made; bob's is not alice's. */
  json_t *v = get_json("/api/v1/sessions", alice);
  ASSERT_EQ_INT(json_array_size(json_object_get(v, "sessions")), 1);
  ASSERT_STR_EQ(json_string_value(json_array_get(json_object_get(v, "sessions"), 0)), sid);
  json_decref(v);
  snprintf(url, sizeof(url), "/api/v1/sessions/%s", sid);
  v = get_json(url, alice);
  ASSERT_STR_EQ(json_string_value(json_array_get(json_object_get(v, "training_run_ids"), 0)),
                mid);
  ASSERT_STR_EQ(json_string_value(json_array_get(json_object_get(v, "sampler_ids"), 0)), smp0);
  /* Live when the server stopped: live again, for its client's heartbeats. */
  ASSERT(json_is_false(json_object_get(v, "expired")));
  json_decref(v);
  free(smp0);
  snprintf(body, sizeof(body), "{\"session_id\":\"%s\"}", sid);
  hc_expect("POST", "/api/v1/session_heartbeat", alice, body, 200, "session_heartbeat");
  hc_expect("GET", url, bob, NULL, 404, "unknown session");
  snprintf(url, sizeof(url), "/api/v1/sessions/%s", bsid);
  hc_expect("GET", url, bob, NULL, 200, "\"training_run_ids\":[]");

  /* The old paths load: create-via-load, load_weights into a new model,
   * weights_info and a sampling session. */
  char *sid2 = create_session(alice);
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":0,\"path\":\"%s\",\"optimizer\":true}", sid2,
           wpath);
  rid = post_field("/api/v1/load_weights", alice, body, "request_id");
  v = result_json(rid, alice);
  free(rid);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "type")), "load_weights");
  json_decref(v);
  char *mid2 = create_model(sid2, 1, alice);
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"seq_id\":1,\"path\":\"%s\"}", mid2, wpath);
  rid = post_field("/api/v1/load_weights", alice, body, "request_id");
  json_decref(result_json(rid, alice));
  free(rid);
  snprintf(body, sizeof(body), "{\"tinker_path\":\"%s\"}", wpath);
  hc_expect("POST", "/api/v1/weights_info", alice, body, 200, "\"lora_rank\":4");
  hc_expect("POST", "/api/v1/weights_info", bob, body, 404, "tinker_path: no such checkpoint");
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"sampling_session_seq_id\":0,\"model_path\":\"%s\"}", sid2,
           spath);
  char *smp = post_field("/api/v1/create_sampling_session", alice, body, "sampling_session_id");
  snprintf(body, sizeof(body),
           "{\"sampling_session_id\":\"%s\",\"seq_id\":0,\"num_samples\":1,\"prompt\":"
           "{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2,3]}]},\"sampling_params\":"
           "{\"max_tokens\":3,\"temperature\":1.0,\"seed\":1}}",
           smp);
  rid = post_field("/api/v1/asample", alice, body, "request_id");
  v = result_json(rid, alice);
  ASSERT_EQ_INT(json_array_size(json_object_get(v, "sequences")), 1);
  json_decref(v);
  free(rid);
  free(smp);
  /* Bob still cannot load alice's old checkpoints. */
  char *bsid2 = create_session(bob);
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":0,\"path\":\"%s\",\"optimizer\":false}",
           bsid2, wpath);
  hc_expect("POST", "/api/v1/load_weights", bob, body, 404, "path: no such checkpoint");
  /* The new run is listed beside the old ones. */
  ASSERT_EQ_INT(list_size("/api/v1/training_runs", "training_runs", alice, &total), 3);

  free(bsid2);
  free(mid2);
  free(sid2);
  free(bsid);
  free(spath);
  free(wpath);
  free(mid);
  free(sid);
  stop_training();
  unlink(keys);
}

TEST(restart_with_another_keys_file) {
  /* What a user made stays hers when the server comes back without her
   * key: nobody else is handed her runs or sessions. */
  char keys[] = "/tmp/tb-keys-XXXXXX";
  start_training_with_keys(keys, "tml-a1 alice\n");
  char *sid = create_session("X-API-Key: tml-a1\r\n");
  char *mid = create_model(sid, 0, "X-API-Key: tml-a1\r\n");
  close_server_keep_loop();
  tb_server_options_t o2 = { 0 };
  reopen_training(&o2);
  ASSERT_EQ_INT(list_size("/api/v1/training_runs", "training_runs", NULL, NULL), 0);
  char url[256];
  snprintf(url, sizeof(url), "/api/v1/training_runs/%s", mid);
  hc_expect("GET", url, NULL, NULL, 404, "run_id:");
  snprintf(url, sizeof(url), "/api/v1/sessions/%s", sid);
  hc_expect("GET", url, NULL, NULL, 404, "unknown session");
  free(mid);
  free(sid);
  stop_training();
  unlink(keys);
}

TEST(restart_keeps_expired_sessions_expired) {
  tb_server_options_t o = { .session_timeout_ms = 1000 };
  start_training(&o);
  char *sid = create_session(NULL);
  char url[256];
  snprintf(url, sizeof(url), "/api/v1/sessions/%s", sid);
  uint64_t deadline = uv_now(&loop) + 60000;
  for (;;) {
    hc_t *c = hc_do("GET", url, NULL, NULL);
    int expired = strstr(c->body, "\"expired\":true") != NULL;
    hc_free(c);
    if (expired)
      break;
    ASSERT_LT(uv_now(&loop), deadline);
    wait_ms(100);
  }
  close_server_keep_loop();
  tb_server_options_t o2 = { 0 };
  reopen_training(&o2);
  hc_expect("GET", "/api/v1/training_runs", NULL, NULL, 200, "\"total_count\":0");
  hc_expect("GET", url, NULL, NULL, 200, "\"expired\":true");
  char body[128];
  snprintf(body, sizeof(body), "{\"session_id\":\"%s\"}", sid);
  hc_expect("POST", "/api/v1/session_heartbeat", NULL, body, 410, "expired");
  free(sid);
  stop_training();
}

TEST(restart_keeps_closed_sessions_closed) {
  start_training(NULL);
  char *sid = create_session(NULL);
  char body[128];
  snprintf(body, sizeof(body), "{\"session_id\":\"%s\",\"type\":\"close_session\"}", sid);
  hc_expect("POST", "/api/v1/close_session", NULL, body, 200, NULL);
  close_server_keep_loop();
  tb_server_options_t o2 = { 0 };
  reopen_training(&o2);
  /* A REST route waits for the database, and so for the sessions read
   * back from it. */
  hc_expect("GET", "/api/v1/training_runs", NULL, NULL, 200, NULL);
  char url[256];
  snprintf(url, sizeof(url), "/api/v1/sessions/%s", sid);
  hc_expect("GET", url, NULL, NULL, 200, "\"closed\":true");
  snprintf(body, sizeof(body), "{\"session_id\":\"%s\"}", sid);
  hc_expect("POST", "/api/v1/session_heartbeat", NULL, body, 410, "was closed");
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":0,\"base_model\":\"base\"}", sid);
  hc_expect("POST", "/api/v1/create_model", NULL, body, 410, "was closed");
  free(sid);
  stop_training();
}

TEST(unusable_data_dir) {
  /* data_dir names a file: the database cannot be made there.  The
   * server still runs; the routes that need the database say why. */
  char file[] = "/tmp/tb-rest-file-XXXXXX";
  int fd = mkstemp(file);
  ASSERT(fd >= 0);
  close(fd);
  tb_server_options_t o = { .data_dir = file };
  start_server(&o);
  uint64_t deadline = uv_now(&loop) + 60000;
  hc_t *c;
  for (;;) {
    c = hc_do("GET", "/api/v1/training_runs", NULL, NULL);
    if (strstr(c->body, "cannot") != NULL)
      break;
    hc_free(c);
    ASSERT_LT(uv_now(&loop), deadline);
    wait_ms(20);
  }
  ASSERT_EQ_INT(c->status, 503);
  ASSERT_STR_CONTAINS(c->body, "the database is unavailable");
  ASSERT_STR_CONTAINS(c->body, "\"category\":\"server\"");
  hc_free(c);
  hc_expect("GET", "/api/v1/healthz", NULL, NULL, 200, NULL);
  stop_server();
  unlink(file);
}

TEST(close_while_opening) {
  /* Closed before the database was even open: the close waits for the
   * open, then closes the connection, and the loop ends clean. */
  char dir[] = "/tmp/tb-rest-XXXXXX";
  ASSERT(mkdtemp(dir) != NULL);
  tb_server_options_t o = { .data_dir = dir };
  start_server(&o);
  stop_server();
  char db[64];
  struct stat st;
  snprintf(db, sizeof(db), "%s/tinkerbell.db", dir);
  ASSERT_OK(stat(db, &st));
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  ASSERT_OK(system(cmd));
}

TEST(ownership_while_opening) {
  /* Before the database is read (the loop has not run yet), who may load
   * a checkpoint is known for runs this server made, and unknown (so the
   * route answers 503, try again) for the others. */
  char keys[] = "/tmp/tb-keys-XXXXXX";
  tb_test_temp_file(keys, "tml-a1 alice\ntml-b1 bob\n");
  char dir[] = "/tmp/tb-rest-XXXXXX";
  ASSERT(mkdtemp(dir) != NULL);
  tb_server_options_t o = { .data_dir = dir, .api_keys_file = keys };
  start_server(&o);
  tb__user_t *alice = tb__auth_user(&srv->auth, "alice");
  tb__user_t *bob = tb__auth_user(&srv->auth, "bob");
  ASSERT(tb__store_state(srv->store) == 0);
  tb__store_run_t run = { .id = "sess-x:train:0", .owner = "alice", .session_id = "sess-x",
                          .base_model = "base", .lora_rank = 4 };
  tb__store_run_created(srv->store, &run);
  tb_slice_t id = { run.id, strlen(run.id) };
  tb_slice_t path = TB_SLICE_LIT("tinker://sess-x:train:0/weights/a");
  ASSERT_EQ_INT(tb__store_may_read(srv->store, alice, id, path), 1);
  ASSERT_EQ_INT(tb__store_may_read(srv->store, bob, id, path), 0);
  tb_slice_t old = TB_SLICE_LIT("sess-y:train:0");
  ASSERT_EQ_INT(tb__store_may_read(srv->store, bob, old, path), UV_EAGAIN);
  /* Once read: a run nobody made is nobody's. */
  RUN_UNTIL(tb__store_state(srv->store) == 1);
  ASSERT_EQ_INT(tb__store_may_read(srv->store, bob, old, path), 0);
  ASSERT_EQ_INT(tb__store_may_read(srv->store, alice, id, path), 1);
  stop_server();
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  ASSERT_OK(system(cmd));
  unlink(keys);
}

/* Every threadpool thread waits at a gate the test opens, so that work
 * queued meanwhile (the database's open) waits behind them. */
static int n_sleepers;
static uv_sem_t gate;

static void sleep_work(uv_work_t *w) {
  uv_sem_wait(&gate);
}

static void open_gate(void) {
  for (int i = n_sleepers; i > 0; i--)
    uv_sem_post(&gate);
}

static void sleep_done(uv_work_t *w, int status) {
  n_sleepers--;
  free(w);
}

/* start_training, with the database's open held up by a busy pool. */
static void start_training_busy_pool(void) {
  strcpy(data_dir, "/tmp/tb-train-XXXXXX");
  ASSERT(mkdtemp(data_dir) != NULL);
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_OK(uv_sem_init(&gate, 0));
  const char *env = getenv("UV_THREADPOOL_SIZE");
  int n = env && atoi(env) > 0 ? atoi(env) : 4;
  for (int i = 0; i < n; i++) {
    uv_work_t *w = xmalloc(sizeof(*w));
    ASSERT_OK(uv_queue_work(&loop, w, sleep_work, sleep_done));
    n_sleepers++;
  }
  tb_server_options_t o = { 0 };
  reopen_training(&o);
}

#define UNKNOWN_PATH "{\"tinker_path\":\"tinker://sess-nobody:train:0/weights/x\"}"

TEST(requests_wait_for_the_database) {
  /* Sent while the database is not read yet: these wait for it (no
   * 503) and then get their real answer. */
  start_training_busy_pool();
  hc_t *c[3];
  for (int i = 0; i < 3; i++)
    c[i] = hc_send("POST", "/api/v1/weights_info", NULL, UNKNOWN_PATH);
  RUN_UNTIL(srv->http.n_requests >= 3);
  ASSERT_EQ_INT(tb__store_state(srv->store), 0);
  ASSERT(!c[0]->complete);
  open_gate();
  for (int i = 0; i < 3; i++) {
    hc_wait(c[i]);
    ASSERT(c[i]->complete);
    ASSERT_EQ_INT(c[i]->status, 404);
    ASSERT_STR_CONTAINS(c[i]->body, "tinker_path: no such checkpoint");
    hc_free(c[i]);
  }
  RUN_UNTIL(n_sleepers == 0);
  uv_sem_destroy(&gate);
  stop_training();
}

TEST(close_with_requests_waiting_for_the_database) {
  /* Closed while requests wait for the database: they are answered 503
   * and nothing of the training part, closed by then, is touched. */
  start_training_busy_pool();
  hc_t *c[2];
  for (int i = 0; i < 2; i++)
    c[i] = hc_send("POST", "/api/v1/weights_info", NULL, UNKNOWN_PATH);
  RUN_UNTIL(srv->http.n_requests >= 2);
  ASSERT_EQ_INT(tb__store_state(srv->store), 0);
  tb_server_close(&server, on_server_closed);
  open_gate();
  for (int i = 0; i < 2; i++) {
    hc_wait(c[i]);
    ASSERT(c[i]->complete);
    ASSERT_EQ_INT(c[i]->status, 503);
    ASSERT_STR_CONTAINS(c[i]->body, "the server is closing");
    hc_free(c[i]);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(server_closed, 1);
  ASSERT_EQ_INT(n_sleepers, 0);
  uv_sem_destroy(&gate);
  ASSERT_LOOP_CLOSE(&loop);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", data_dir);
  ASSERT_OK(system(cmd));
}

/* The prompt log-probs of [1, 2, 3, 4, 5] from a sampling session, or
 * from the base model when smp is NULL. */
static json_t *prompt_logprobs(const char *smp) {
  char body[512], who[160];
  if (smp != NULL)
    snprintf(who, sizeof(who), "\"sampling_session_id\":\"%s\"", smp);
  else
    snprintf(who, sizeof(who), "\"base_model\":\"base\"");
  snprintf(body, sizeof(body),
           "{%s,\"seq_id\":0,\"num_samples\":1,\"prompt_logprobs\":true,\"prompt\":"
           "{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2,3,4,5]}]},"
           "\"sampling_params\":{\"max_tokens\":1,\"temperature\":1.0,\"seed\":1}}",
           who);
  char *rid = post_field("/api/v1/asample", NULL, body, "request_id");
  json_t *v = result_json(rid, NULL);
  free(rid);
  json_t *lp = json_incref(json_object_get(v, "prompt_logprobs"));
  json_decref(v);
  ASSERT_EQ_INT(json_array_size(lp), 5);
  return lp;
}

TEST(sampling_an_old_checkpoint_at_start) {
  /* Right after a restart, the database and the base model are both
   * still loading (the threadpool is held at a gate): a sampling session
   * over trained weights of the earlier server waits for both, and then
   * samples with those weights, not the bare base model. */
  char *sid, *mid;
  start_training_with_model(&sid, &mid);
  train_step(mid, 1, 0.05);
  char body[512];
  char *spath = save(mid, 3, "save_weights_for_sampler", "s1", 0, NULL);
  close_server_keep_loop();

  ASSERT_OK(uv_sem_init(&gate, 0));
  for (int i = 0; i < 4; i++) {
    uv_work_t *w = xmalloc(sizeof(*w));
    ASSERT_OK(uv_queue_work(&loop, w, sleep_work, sleep_done));
    n_sleepers++;
  }
  tb_server_options_t o2 = { 0 };
  reopen_training(&o2);
  char *sid2 = create_session(NULL);
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"sampling_session_seq_id\":0,\"model_path\":\"%s\"}",
           sid2, spath);
  hc_t *c = hc_send("POST", "/api/v1/create_sampling_session", NULL, body);
  uint64_t n0 = srv->http.n_requests;
  RUN_UNTIL(srv->http.n_requests > n0);
  ASSERT_EQ_INT(tb__store_state(srv->store), 0);
  open_gate();
  hc_wait(c);
  ASSERT_EQ_INT(c->status, 200);
  char *smp = field_of(c, "sampling_session_id");
  hc_free(c);
  json_t *trained = prompt_logprobs(smp);
  json_t *plain = prompt_logprobs(NULL);
  double diff = 0;
  for (size_t i = 1; i < 5; i++)
    diff += fabs(json_number_value(json_array_get(trained, i)) -
                 json_number_value(json_array_get(plain, i)));
  ASSERT_GT(diff, 1e-4);
  json_decref(trained);
  json_decref(plain);
  RUN_UNTIL(n_sleepers == 0);
  uv_sem_destroy(&gate);
  free(smp);
  free(sid2);
  free(spath);
  free(mid);
  free(sid);
  stop_training();
}

TEST_LIST(
  TEST_ENTRY(runs_and_checkpoints),
  TEST_ENTRY(users_see_their_own),
  TEST_ENTRY(ttl_expiry),
  TEST_ENTRY(restart_keeps_runs_checkpoints_and_sessions),
  TEST_ENTRY(restart_with_another_keys_file),
  TEST_ENTRY(restart_keeps_expired_sessions_expired),
  TEST_ENTRY(restart_keeps_closed_sessions_closed),
  TEST_ENTRY(unusable_data_dir),
  TEST_ENTRY(close_while_opening),
  TEST_ENTRY(ownership_while_opening),
  TEST_ENTRY(requests_wait_for_the_database),
  TEST_ENTRY(close_with_requests_waiting_for_the_database),
  TEST_ENTRY(sampling_an_old_checkpoint_at_start),
)
