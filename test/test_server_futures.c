/*
 * The futures store and retrieve_future in both dialects, driven over
 * loopback: long polls answered the moment a future resolves, try_again
 * with the queue state, 404 and 410, the grace period, protobuf or JSON
 * by Accept, the memory bound, clients that vanish during a held poll,
 * and a close with polls held.
 */
#include "test_server_client.h"

static tb__future_t *new_future(void) {
  tb__future_t *f;
  ASSERT_OK(tb__future_create(&srv->futures, srv->auth.local, &f));
  return f;
}

static char *retrieve_body(const char *id) {
  char *b = xmalloc(128);
  snprintf(b, 128, "{\"request_id\":\"%s\",\"allow_metadata_only\":true}", id);
  return b;
}

static hc_t *poll_send(const char *id, const char *extra) {
  char *b = retrieve_body(id);
  hc_t *c = hc_send("POST", "/api/v1/retrieve_future", extra, b);
  free(b);
  return c;
}

static void resolve_json(tb__future_t *f, const char *json) {
  ASSERT_OK(tb__future_resolve(f, xstrdup(json), strlen(json), NULL, 0));
}

TEST(ids_unique_and_shaped) {
  start_server(NULL);
  enum { N = 2000 };
  char (*ids)[TB__FUTURE_ID_MAX] = calloc(N, TB__FUTURE_ID_MAX);
  for (int i = 0; i < N; i++) {
    tb__future_t *f = new_future();
    ASSERT_EQ_INT(f->id_len, 36);
    ASSERT(memcmp(f->id, "req-", 4) == 0);
    for (size_t k = 4; k < f->id_len; k++)
      ASSERT(strchr("0123456789abcdef", f->id[k]) != NULL);
    memcpy(ids[i], f->id, TB__FUTURE_ID_MAX);
    tb__future_fail(f, TB_CATEGORY_USER, "unused");
  }
  for (int i = 0; i < N; i++)
    for (int j = i + 1; j < N; j++)
      ASSERT(strcmp(ids[i], ids[j]) != 0);
  free(ids);
  ASSERT_EQ_INT(srv->futures.n_pending, 0);
  ASSERT_EQ_INT(srv->futures.n_finished, N);
  stop_server();
}

TEST(long_poll_answered_on_resolve) {
  tb_server_options_t o = { .long_poll_ms = 20000 };
  start_server(&o);
  tb__future_t *f = new_future();
  char id[TB__FUTURE_ID_MAX];
  memcpy(id, f->id, sizeof(id));
  hc_t *a = poll_send(id, NULL);
  hc_t *b = poll_send(id, NULL);
  RUN_UNTIL(srv->futures.n_polls == 2);
  ASSERT(!a->complete && !b->complete);
  uint64_t t0 = uv_now(&loop);
  resolve_json(f, "{\"model_id\":\"m1\",\"type\":\"create_model\"}");
  ASSERT_EQ_INT(srv->futures.n_polls, 0);
  hc_wait(a);
  hc_wait(b);
  ASSERT_EQ_INT(a->status, 200);
  ASSERT_EQ_INT(b->status, 200);
  ASSERT_STR_EQ(a->body, "{\"model_id\":\"m1\",\"type\":\"create_model\"}");
  ASSERT_STR_EQ(b->body, a->body);
  ASSERT_STR_CONTAINS(a->head, "Content-Type: application/json");
  ASSERT_LT(uv_now(&loop) - t0, 1000);
  hc_free(a);
  hc_free(b);
  /* Finished now: a new poll is answered at once, and again later. */
  hc_t *c = poll_send(id, NULL);
  hc_wait(c);
  ASSERT_EQ_INT(c->status, 200);
  ASSERT_STR_CONTAINS(c->body, "\"m1\"");
  hc_free(c);
  stop_server();
}

TEST(try_again_with_queue_state) {
  tb_server_options_t o = { .long_poll_ms = 60 };
  start_server(&o);
  tb__future_t *f = new_future();
  ASSERT_OK(tb__future_set_queue_state(f, TB__QUEUE_PAUSED_CAPACITY,
                                       "waiting for \"a\" free slot"));
  hc_t *c = poll_send(f->id, NULL);
  hc_wait(c);
  ASSERT_EQ_INT(c->status, 200);
  ASSERT_GE(c->answered_at - c->sent_at, 55);
  json_t *v = hc_json(c);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "type")), "try_again");
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "request_id")), f->id);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "queue_state")), "paused_capacity");
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "queue_state_reason")),
                "waiting for \"a\" free slot");
  /* Not started, and no training part to say what is ahead. */
  ASSERT(json_is_null(json_object_get(v, "started_at")));
  ASSERT_EQ_INT(json_integer_value(json_object_get(v, "queue_position")), 0);
  json_decref(v);
  hc_free(c);
  ASSERT_OK(tb__future_set_queue_state(f, TB__QUEUE_PAUSED_RATE_LIMIT, NULL));
  c = poll_send(f->id, NULL);
  hc_wait(c);
  v = hc_json(c);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "queue_state")), "paused_rate_limit");
  ASSERT(json_object_get(v, "queue_state_reason") == NULL);
  json_decref(v);
  hc_free(c);
  tb__future_set_started(f);
  c = poll_send(f->id, NULL);
  hc_wait(c);
  ASSERT_STR_CONTAINS(c->body, "\"started_at\":\"20");
  hc_free(c);
  /* Several polls time out in order, each after its own long_poll_ms. */
  hc_t *p[3];
  for (int i = 0; i < 3; i++) {
    p[i] = poll_send(f->id, NULL);
    wait_ms(20);
  }
  for (int i = 0; i < 3; i++) {
    hc_wait(p[i]);
    ASSERT_STR_CONTAINS(p[i]->body, "try_again");
    ASSERT_GE(p[i]->answered_at - p[i]->sent_at, 55);
    ASSERT_LT(p[i]->answered_at - p[i]->sent_at, 1000);
    hc_free(p[i]);
  }
  ASSERT_EQ_INT(srv->futures.n_try_again, 6);
  tb__future_fail(f, TB_CATEGORY_SERVER, "shutting down");
  stop_server();
}

TEST(failed_and_unknown) {
  tb_server_options_t o = { .long_poll_ms = 5000 };
  start_server(&o);
  tb__future_t *f = new_future();
  char id[TB__FUTURE_ID_MAX];
  memcpy(id, f->id, sizeof(id));
  hc_t *c = poll_send(id, NULL);
  RUN_UNTIL(srv->futures.n_polls == 1);
  tb__future_fail(f, TB_CATEGORY_USER, "seq_id %d can never come", 3);
  hc_wait(c);
  ASSERT_EQ_INT(c->status, 200);
  ASSERT_STR_EQ(c->body, "{\"error\":\"seq_id 3 can never come\",\"category\":\"user\"}");
  hc_free(c);
  char *b = retrieve_body("req-00000000000000000000000000000000");
  hc_expect("POST", "/api/v1/retrieve_future", NULL, b, 404, "unknown request");
  hc_expect("POST", "/retrieve_future", NULL, b, 404, "unknown request");
  free(b);
  stop_server();
}

TEST(ttl_expiry_gives_410) {
  tb_server_options_t o = { .long_poll_ms = 5000, .result_ttl_ms = 50 };
  start_server(&o);
  tb__future_t *f = new_future();
  char *b = retrieve_body(f->id);
  resolve_json(f, "{\"ok\":1}");
  ASSERT_EQ_INT(srv->futures.n_finished, 1);
  wait_ms(120);  /* the sweep timer fires on its own */
  ASSERT_EQ_INT(srv->futures.n_finished, 0);
  ASSERT_EQ_INT(srv->futures.n_expired, 1);
  ASSERT_EQ_INT(srv->futures.bytes, 0);
  hc_expect("POST", "/api/v1/retrieve_future", NULL, b, 410, "expired");
  hc_expect("POST", "/retrieve_future", NULL, b, 410, "expired");
  free(b);
  stop_server();
}

TEST(grace_keeps_delivered_result) {
  tb_server_options_t o = { .long_poll_ms = 5000, .result_ttl_ms = 40 };
  start_server(&o);
  /* The public floor is two minutes; the test shortens it inside. */
  ASSERT_EQ_INT(srv->futures.opts.grace_ms, 120000);
  srv->futures.opts.grace_ms = 250;
  tb__future_t *f = new_future();
  char *b = retrieve_body(f->id);
  resolve_json(f, "{\"ok\":2}");
  hc_expect("POST", "/api/v1/retrieve_future", NULL, b, 200, "{\"ok\":2}");
  wait_ms(120);  /* past the TTL, inside the grace period */
  hc_expect("POST", "/api/v1/retrieve_future", NULL, b, 200, "{\"ok\":2}");
  hc_expect("POST", "/retrieve_future", NULL, b, 200, "{\"ok\":2}");
  wait_ms(200);  /* past the grace period (counted from the first delivery) */
  hc_expect("POST", "/api/v1/retrieve_future", NULL, b, 410, "expired");
  free(b);
  stop_server();
}

TEST(protobuf_or_json_by_accept) {
  tb_server_options_t o = { .long_poll_ms = 5000 };
  start_server(&o);
  tb__future_t *f = new_future();
  char *b = retrieve_body(f->id);
  static const char proto[] = { 0x0a, 0x03, 'a', 0x00, 'c', 0x10, 0x01 };
  char *pb = xmalloc(sizeof(proto));
  memcpy(pb, proto, sizeof(proto));
  ASSERT_OK(tb__future_resolve(f, xstrdup("{\"form\":\"json\"}"), 15, pb, sizeof(proto)));
  hc_t *c = hc_do("POST", "/api/v1/retrieve_future",
                  "Accept: application/x-protobuf\r\n", b);
  ASSERT_EQ_INT(c->status, 200);
  ASSERT_STR_CONTAINS(c->head, "Content-Type: application/x-protobuf");
  ASSERT_EQ_INT(c->body_len, sizeof(proto));
  ASSERT(memcmp(c->body, proto, sizeof(proto)) == 0);
  hc_free(c);
  c = hc_do("POST", "/api/v1/retrieve_future", "Accept: application/json\r\n", b);
  ASSERT_STR_CONTAINS(c->head, "Content-Type: application/json");
  ASSERT_STR_EQ(c->body, "{\"form\":\"json\"}");
  hc_free(c);
  c = hc_do("POST", "/api/v1/retrieve_future", NULL, b);
  ASSERT_STR_EQ(c->body, "{\"form\":\"json\"}");
  hc_free(c);
  /* A result with only a protobuf form goes as protobuf regardless. */
  tb__future_t *g = new_future();
  char *b2 = retrieve_body(g->id);
  pb = xmalloc(sizeof(proto));
  memcpy(pb, proto, sizeof(proto));
  ASSERT_OK(tb__future_resolve(g, NULL, 0, pb, sizeof(proto)));
  c = hc_do("POST", "/api/v1/retrieve_future", NULL, b2);
  ASSERT_STR_CONTAINS(c->head, "application/x-protobuf");
  hc_free(c);
  free(b);
  free(b2);
  stop_server();
}

TEST(tinkerbell_dialect) {
  tb_server_options_t o = { .long_poll_ms = 5000 };
  start_server(&o);
  tb__future_t *f = new_future(), *g = new_future();
  char *bf = retrieve_body(f->id), *bg = retrieve_body(g->id);
  /* Pending answers at once, never held. */
  hc_t *c = hc_do("POST", "/retrieve_future", NULL, bf);
  ASSERT_EQ_INT(c->status, 202);
  ASSERT_STR_EQ(c->body, "{\"status\":\"pending\"}");
  ASSERT_LT(c->answered_at - c->sent_at, 1000);
  hc_free(c);
  resolve_json(f, "{\"loss\":0.5,\"num_samples\":2}");
  hc_expect("POST", "/retrieve_future", NULL, bf, 200, "{\"loss\":0.5,\"num_samples\":2}");
  tb__future_fail(g, TB_CATEGORY_SERVER, "the adapter \"x\" ran out of memory");
  c = hc_do("POST", "/retrieve_future", NULL, bg);
  ASSERT_EQ_INT(c->status, 500);
  json_t *v = hc_json(c);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "detail")),
                "Job failed: the adapter \"x\" ran out of memory");
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "category")), "server");
  json_decref(v);
  hc_free(c);
  hc_expect("POST", "/retrieve_future", NULL,
            "{\"request_id\":\"future_abc123\"}", 404, NULL);
  hc_expect("POST", "/retrieve_future", NULL, "{\"request_id\":", 400, "body: invalid JSON");
  hc_expect("POST", "/retrieve_future", NULL, "{}", 400, "request_id: ");
  hc_expect("POST", "/retrieve_future", NULL, "{\"request_id\":7}", 400,
            "request_id: expected a string");
  hc_expect("POST", "/retrieve_future", NULL, "[1]", 400, "body: expected an object");
  hc_expect("POST", "/api/v1/retrieve_future", NULL,
            "{\"request_id\":\"x\",\"allow_metadata_only\":\"yes\"}", 400,
            "allow_metadata_only: expected a boolean");
  free(bf);
  free(bg);
  stop_server();
}

TEST(client_gone_during_poll) {
  tb_server_options_t o = { .long_poll_ms = 5000 };
  start_server(&o);
  tb__future_t *f = new_future();
  hc_t *a = poll_send(f->id, NULL);
  hc_t *b = poll_send(f->id, NULL);
  RUN_UNTIL(srv->futures.n_polls == 2);
  hc_close(a);  /* a goes away; the server notices its EOF */
  RUN_UNTIL(srv->futures.n_polls == 1);
  ASSERT(f->waiters != NULL && f->waiters->next == NULL);
  resolve_json(f, "{\"done\":true}");
  hc_wait(b);
  ASSERT_EQ_INT(b->status, 200);
  ASSERT_STR_EQ(b->body, "{\"done\":true}");
  hc_free(a);
  hc_free(b);
  /* The vanished client is counted as 499 on the route. */
  hc_t *m = hc_do("GET", "/metrics", NULL, NULL);
  ASSERT_STR_CONTAINS(m->body, "route=\"/api/v1/retrieve_future\",status=\"499\"} 1\n");
  ASSERT_STR_CONTAINS(m->body, "route=\"/api/v1/retrieve_future\",status=\"200\"} 1\n");
  ASSERT_STR_CONTAINS(m->body, "tinkerbell_long_polls_held 0\n");
  hc_free(m);
  stop_server();
}

TEST(memory_bound_evicts_delivered_first) {
  tb_server_options_t o = { .long_poll_ms = 5000 };
  start_server(&o);
  char big[1001];
  memset(big, 'x', 1000);
  big[0] = '"';
  big[999] = '"';
  big[1000] = '\0';
  tb__future_t *fa = new_future();
  resolve_json(fa, big);
  size_t cost = srv->futures.bytes;
  ASSERT_GT(cost, 1000);
  srv->futures.opts.max_bytes = 2 * cost;
  tb__future_t *fb = new_future(), *fc = new_future(), *fd = new_future();
  char *ba = retrieve_body(fa->id), *bb = retrieve_body(fb->id);
  char *bc = retrieve_body(fc->id), *bd = retrieve_body(fd->id);
  resolve_json(fb, big);
  hc_expect("POST", "/api/v1/retrieve_future", NULL, bb, 200, "xxx");  /* b delivered */
  resolve_json(fc, big);  /* over the bound: the delivered b goes, not the older a */
  ASSERT_EQ_INT(srv->futures.n_evicted, 1);
  hc_expect("POST", "/api/v1/retrieve_future", NULL, bb, 410, NULL);
  hc_expect("POST", "/retrieve_future", NULL, ba, 200, "xxx");  /* a delivered now */
  resolve_json(fd, big);  /* a is delivered: it goes */
  ASSERT_EQ_INT(srv->futures.n_evicted, 2);
  hc_expect("POST", "/api/v1/retrieve_future", NULL, ba, 410, NULL);
  ASSERT_LE(srv->futures.bytes, 2 * cost);
  /* Nothing delivered left: the oldest undelivered (c) goes for e. */
  tb__future_t *fe = new_future();
  resolve_json(fe, big);
  ASSERT_EQ_INT(srv->futures.n_evicted, 3);
  hc_expect("POST", "/api/v1/retrieve_future", NULL, bc, 410, NULL);
  hc_expect("POST", "/api/v1/retrieve_future", NULL, bd, 200, "xxx");
  hc_t *m = hc_do("GET", "/metrics", NULL, NULL);
  char line[64];
  snprintf(line, sizeof(line), "tinkerbell_result_bytes %zu\n", 2 * cost);
  ASSERT_STR_CONTAINS(m->body, line);
  ASSERT_STR_CONTAINS(m->body, "tinkerbell_futures_evicted_total 3\n");
  hc_free(m);
  free(ba);
  free(bb);
  free(bc);
  free(bd);
  stop_server();
}

/* A result still being written when its future is evicted stays alive
 * until the write ends (ASan would catch a use after free). */
TEST(eviction_while_answer_in_flight) {
  tb_server_options_t o = { .long_poll_ms = 5000 };
  start_server(&o);
  size_t n = 2u << 20;
  char *big = xmalloc(n);
  memset(big, 'y', n);
  big[0] = '"';
  big[n - 1] = '"';
  tb__future_t *f = new_future();
  hc_t *c = poll_send(f->id, NULL);
  RUN_UNTIL(srv->futures.n_polls == 1);
  srv->futures.opts.max_bytes = 1;
  ASSERT_OK(tb__future_resolve(f, big, n, NULL, 0));
  /* The write is under way; a second result evicts the first at once. */
  tb__future_t *g = new_future();
  resolve_json(g, "{}");
  ASSERT_EQ_INT(srv->futures.n_evicted, 1);
  hc_wait(c);
  ASSERT_EQ_INT(c->status, 200);
  ASSERT_EQ_INT(c->body_len, n);
  ASSERT_EQ_INT(c->body[n / 2], 'y');
  hc_free(c);
  stop_server();
}

TEST(close_answers_held_polls) {
  tb_server_options_t o = { .long_poll_ms = 20000 };
  start_server(&o);
  tb__future_t *f = new_future();
  hc_t *a = poll_send(f->id, NULL);
  hc_t *b = poll_send(f->id, NULL);
  RUN_UNTIL(srv->futures.n_polls == 2);
  tb_server_close(&server, on_server_closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(server_closed, 1);
  ASSERT(a->complete && b->complete);
  ASSERT_EQ_INT(a->status, 200);
  ASSERT_STR_CONTAINS(a->body, "\"type\":\"try_again\"");
  ASSERT_STR_CONTAINS(b->body, "\"type\":\"try_again\"");
  ASSERT_STR_CONTAINS(a->head, "Connection: close");
  hc_free(a);
  hc_free(b);
  ASSERT_LOOP_CLOSE(&loop);
}

TEST(other_users_futures_are_invisible) {
  char path[] = "/tmp/tb_keys_XXXXXX";
  int fd = mkstemp(path);
  ASSERT(fd >= 0);
  static const char keys[] = "tml-alice alice\ntml-bob bob\n";
  ASSERT_EQ_INT(write(fd, keys, sizeof(keys) - 1), (long)sizeof(keys) - 1);
  close(fd);
  tb_server_options_t o = { .long_poll_ms = 5000, .api_keys_file = path,
                            .result_ttl_ms = 50 };
  start_server(&o);
  unlink(path);
  tb__user_t *alice = tb__auth_user(&srv->auth, "alice");
  ASSERT(alice != NULL);
  tb__future_t *f, *g;
  ASSERT_OK(tb__future_create(&srv->futures, alice, &f));
  ASSERT_OK(tb__future_create(&srv->futures, alice, &g));
  char *b = retrieve_body(f->id), *bg = retrieve_body(g->id);
  resolve_json(f, "{\"mine\":1}");
  resolve_json(g, "{\"mine\":2}");
  hc_expect("POST", "/api/v1/retrieve_future", NULL, b, 401, "missing API key");
  hc_expect("POST", "/api/v1/retrieve_future", "X-API-Key: tml-bob\r\n", b, 404, NULL);
  hc_expect("POST", "/retrieve_future", "X-API-Key: tml-bob\r\n", b, 404, NULL);
  hc_expect("POST", "/api/v1/retrieve_future", "X-API-Key: tml-alice\r\n", b, 200,
            "{\"mine\":1}");
  hc_expect("POST", "/api/v1/retrieve_future", "Authorization: Bearer tml-alice\r\n", b,
            200, "{\"mine\":1}");
  wait_ms(120);  /* g expires: 410 for alice, still 404 for bob */
  hc_expect("POST", "/api/v1/retrieve_future", "X-API-Key: tml-alice\r\n", bg, 410, NULL);
  hc_expect("POST", "/api/v1/retrieve_future", "X-API-Key: tml-bob\r\n", bg, 404, NULL);
  free(b);
  free(bg);
  stop_server();
}


/* A synchronous route's way to wait: a plain waiter, called once when the
 * future finishes, or with the future still pending when the store
 * closes. */
static int waiter_calls, waiter_saw_state;

static void on_waiter(tb__fwaiter_t *w, tb__future_t *f) {
  ASSERT(w->data == &waiter_calls);
  waiter_calls++;
  waiter_saw_state = (int)f->state;
}

TEST(plain_waiters) {
  start_server(NULL);
  tb__fwaiter_t w1 = { .data = &waiter_calls }, w2 = { .data = &waiter_calls };
  tb__fwaiter_t w3 = { .data = &waiter_calls };
  tb__future_t *f = new_future(), *g = new_future();
  waiter_calls = 0;
  tb__future_wait(f, &w1, on_waiter);
  tb__future_wait(f, &w2, on_waiter);
  tb__future_unwait(&w2);
  tb__future_unwait(&w2);  /* a second unwait is a no-op */
  resolve_json(f, "{}");
  ASSERT_EQ_INT(waiter_calls, 1);
  ASSERT_EQ_INT(waiter_saw_state, TB__FUTURE_DONE);
  ASSERT(f->delivered_ms == 0);
  tb__future_mark_delivered(f);
  ASSERT(f->delivered_ms != 0);
  tb__future_wait(g, &w3, on_waiter);
  tb_server_close(&server, on_server_closed);
  ASSERT_EQ_INT(waiter_calls, 2);
  ASSERT_EQ_INT(waiter_saw_state, TB__FUTURE_PENDING);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(server_closed, 1);
  ASSERT_LOOP_CLOSE(&loop);
}

/* A part plugged in later closes first: the futures it fails on its way
 * out reach the polls that wait for them, and its metrics are served. */
static tb__future_t *ext_future;
static uv_timer_t ext_timer;
static int ext_close_calls;

static void on_ext_timer_closed(uv_handle_t *h) {
  tb__server_ext_t *ext = h->data;
  tb__server_ext_closed(srv, ext);
}

static void on_ext_timer(uv_timer_t *t) {
  tb__future_fail(ext_future, TB_CATEGORY_SERVER, "the server is shutting down");
  uv_close((uv_handle_t *)t, on_ext_timer_closed);
}

static void ext_close(tb__server_t *s, tb__server_ext_t *ext) {
  ext_close_calls++;
  ext_timer.data = ext;
  ASSERT_OK(uv_timer_init(&loop, &ext_timer));
  ext_timer.data = ext;
  ASSERT_OK(uv_timer_start(&ext_timer, on_ext_timer, 10, 0));
}

static void ext_metrics(tb__server_t *s, tb__server_ext_t *ext, tb__buf_t *out) {
  tb__buf_printf(out, "tinkerbell_queue_depth 7\n");
}

TEST(extension_closes_first) {
  tb_server_options_t o = { .long_poll_ms = 20000 };
  start_server(&o);
  tb__server_ext_t ext = { .close = ext_close, .metrics = ext_metrics };
  tb__server_add_ext(srv, &ext);
  hc_expect("GET", "/metrics", NULL, NULL, 200, "tinkerbell_queue_depth 7\n");
  ext_future = new_future();
  hc_t *c = poll_send(ext_future->id, NULL);
  RUN_UNTIL(srv->futures.n_polls == 1);
  ext_close_calls = 0;
  tb_server_close(&server, on_server_closed);
  ASSERT_EQ_INT(ext_close_calls, 1);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(server_closed, 1);
  ASSERT(c->complete);
  ASSERT_STR_EQ(c->body, "{\"error\":\"the server is shutting down\",\"category\":\"server\"}");
  hc_free(c);
  ASSERT_LOOP_CLOSE(&loop);
}

/* Poll bodies: the common shapes (read without a JSON document) and every
 * other body (read by jansson) find the same future or give the same
 * errors. */
TEST(poll_bodies_of_every_shape) {
  tb_server_options_t o = { .long_poll_ms = 5000 };
  start_server(&o);
  tb__future_t *f = new_future();
  resolve_json(f, "{\"ok\":1}");
  char id[TB__FUTURE_ID_MAX];
  memcpy(id, f->id, sizeof(id));
  static const char *const found[] = {
    "{\"request_id\":\"%s\"}",
    " { \"request_id\" :\t\"%s\" } \n",
    "{\"request_id\":\"%s\",\"allow_metadata_only\":false}",
    "{\"request_id\": \"%s\", \"allow_metadata_only\": true}",
    /* Not the common shape: jansson reads them. */
    "{\"allow_metadata_only\":true,\"request_id\":\"%s\"}",
    "{\"request_id\":\"%s\",\"extra\":[1,2,{}]}",
    "{\"request_id\":\"\\u0072%s\"}",   /* "r" escaped: id without its r */
  };
  char body[256];
  for (size_t i = 0; i < sizeof(found) / sizeof(found[0]); i++) {
    snprintf(body, sizeof(body), found[i], i == 6 ? id + 1 : id);
    hc_expect("POST", "/api/v1/retrieve_future", NULL, body, 200, "{\"ok\":1}");
    hc_expect("POST", "/retrieve_future", NULL, body, 200, "{\"ok\":1}");
  }
  static const struct {
    const char *body;
    int status;
    const char *want;
  } bad[] = {
    { "{\"request_id\":\"req-0\"", 400, "invalid JSON" },
    { "{\"request_id\":\"req-0\"}}", 400, "invalid JSON" },
    { "{\"request_id\":7}", 400, "request_id" },
    { "{\"request_id\":\"req-0\",\"allow_metadata_only\":1}", 400, "allow_metadata_only" },
    { "{}", 400, "request_id" },
    { "[\"request_id\"]", 400, "object" },
    { "{\"request_id\":\"\"}", 404, "unknown request" },
    { "{\"request_id\":\"req-00000000000000000000000000000000\"}", 404, "unknown request" },
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    hc_expect("POST", "/api/v1/retrieve_future", NULL, bad[i].body, bad[i].status,
              bad[i].want);
  stop_server();
}

TEST_LIST(
  TEST_ENTRY(poll_bodies_of_every_shape),
  TEST_ENTRY(ids_unique_and_shaped),
  TEST_ENTRY(long_poll_answered_on_resolve),
  TEST_ENTRY(try_again_with_queue_state),
  TEST_ENTRY(failed_and_unknown),
  TEST_ENTRY(ttl_expiry_gives_410),
  TEST_ENTRY(grace_keeps_delivered_result),
  TEST_ENTRY(protobuf_or_json_by_accept),
  TEST_ENTRY(tinkerbell_dialect),
  TEST_ENTRY(client_gone_during_poll),
  TEST_ENTRY(memory_bound_evicts_delivered_first),
  TEST_ENTRY(eviction_while_answer_in_flight),
  TEST_ENTRY(close_answers_held_polls),
  TEST_ENTRY(other_users_futures_are_invisible),
  TEST_ENTRY(plain_waiters),
  TEST_ENTRY(extension_closes_first),
)
