/*
 * What the client runtime tests share: a scripted fake Tinker server on the
 * test's loop (the project's HTTP server answering from scripts of
 * responses), a log of what the client sent, a telemetry recorder, and a
 * runtime or ServiceClient pointed at the fake with millisecond backoffs.
 *
 * Two scripts: one for POST /api/v1/retrieve_future, one for every other
 * request.  Each answer is taken in order; the last one repeats once the
 * script is used up.  An answer may be delayed, or may drop the
 * connection without a word.  A test that needs answers computed per
 * request sets fk->decide instead.
 */
#ifndef TB_TEST_CLIENT_FAKE_H
#define TB_TEST_CLIENT_FAKE_H

#define _GNU_SOURCE
#include "tb_test.h"

#include <jansson.h>

#include "client/internal.h"
#include "http/server.h"
#include "http/server_internal.h"
#include "tinkerbell/service_client.h"

typedef struct fake_resp_s {
  int status;
  const char *body;           /* NULL: empty */
  const char *content_type;   /* NULL: application/json when a body */
  const char *hname, *hvalue; /* one more header, optional */
  uint64_t delay_ms;          /* answer this much later */
  int drop;                   /* close the connection instead */
} fake_resp_t;

typedef struct fake_log_s {
  char path[64];
  char idem[96];
  char retry_count[16];
  char iteration[16];
  char request_type[32];
  char api_key[64];
  char body[256];
  uint64_t at;
} fake_log_t;

typedef struct fake_s fake_t;
typedef fake_resp_t (*fake_decide_fn)(fake_t *fk, tb__http_request_t *req, int is_poll);

typedef struct fake_delay_s {
  uv_timer_t timer;
  fake_t *fk;
  tb__http_request_t *req;
  fake_resp_t resp;
  struct fake_delay_s *next, *prev;
} fake_delay_t;

struct fake_s {
  uv_loop_t *loop;
  tb__http_server_t http;
  int port;
  const fake_resp_t *submit;
  size_t n_submit, i_submit;
  const fake_resp_t *poll;
  size_t n_poll, i_poll;
  fake_decide_fn decide;
  void *data;
  fake_log_t *log;
  size_t n_log, cap_log;
  size_t n_requests;
  fake_delay_t *delays;
  int closed;
};

static inline void fake_answer(tb__http_request_t *req, const fake_resp_t *r) {
  if (r->drop) {
    if (req->conn != NULL)
      tb__http_conn_abort(req->conn, TB_ECLOSED);
    tb__http_respond(req, 500, NULL, 0, NULL, 0);  /* releases the request */
    return;
  }
  tb__http_header_t hs[2];
  size_t n = 0;
  const char *body = r->body ? r->body : "";
  size_t len = strlen(body);
  if (len > 0 || r->content_type != NULL) {
    const char *ct = r->content_type ? r->content_type : "application/json";
    hs[n].name = (tb_slice_t){ "Content-Type", 12 };
    hs[n].value = (tb_slice_t){ ct, strlen(ct) };
    n++;
  }
  if (r->hname != NULL) {
    hs[n].name = (tb_slice_t){ r->hname, strlen(r->hname) };
    hs[n].value = (tb_slice_t){ r->hvalue, strlen(r->hvalue) };
    n++;
  }
  /* The body is copied into the request's arena: it must outlive us. */
  char *copy = tb__arena_alloc(&req->arena, len + 1);
  ASSERT(copy != NULL);
  memcpy(copy, body, len + 1);
  uv_buf_t b = uv_buf_init(copy, (unsigned)len);
  tb__http_respond(req, r->status, hs, n, len ? &b : NULL, len ? 1 : 0);
}

static inline void fake_delay_closed(uv_handle_t *h) { free(h->data); }

static inline void fake_delay_unlink(fake_delay_t *d) {
  fake_t *fk = d->fk;
  if (d->prev)
    d->prev->next = d->next;
  else
    fk->delays = d->next;
  if (d->next)
    d->next->prev = d->prev;
}

static inline void fake_delay_fire(uv_timer_t *t) {
  fake_delay_t *d = t->data;
  fake_delay_unlink(d);
  fake_answer(d->req, &d->resp);
  uv_close((uv_handle_t *)&d->timer, fake_delay_closed);
}

static inline void fake_copy_header(tb__http_request_t *req, const char *name, char *out,
                                    size_t cap) {
  const tb__http_header_t *h = tb__http_request_header(req, name);
  out[0] = '\0';
  if (h != NULL)
    snprintf(out, cap, "%.*s", (int)h->value.len, h->value.base);
}

static inline void fake_on_request(tb__http_request_t *req) {
  fake_t *fk = req->server->data;
  int is_poll = tb__slice_eq_str(req->path, "/api/v1/retrieve_future");
  if (fk->n_log == fk->cap_log) {
    fk->cap_log = fk->cap_log ? fk->cap_log * 2 : 64;
    fk->log = realloc(fk->log, fk->cap_log * sizeof(*fk->log));
    ASSERT(fk->log != NULL);
  }
  fake_log_t *l = &fk->log[fk->n_log++];
  memset(l, 0, sizeof(*l));
  snprintf(l->path, sizeof(l->path), "%.*s", (int)req->path.len, req->path.base);
  snprintf(l->body, sizeof(l->body), "%.*s", (int)req->body.len, req->body.base);
  fake_copy_header(req, "x-idempotency-key", l->idem, sizeof(l->idem));
  fake_copy_header(req, "x-stainless-retry-count", l->retry_count, sizeof(l->retry_count));
  fake_copy_header(req, "x-tinker-request-iteration", l->iteration, sizeof(l->iteration));
  fake_copy_header(req, "x-tinker-request-type", l->request_type, sizeof(l->request_type));
  fake_copy_header(req, "x-api-key", l->api_key, sizeof(l->api_key));
  l->at = uv_now(fk->loop);
  fk->n_requests++;

  fake_resp_t r;
  if (fk->decide != NULL) {
    r = fk->decide(fk, req, is_poll);
  } else if (is_poll) {
    ASSERT(fk->n_poll > 0);
    r = fk->poll[fk->i_poll < fk->n_poll ? fk->i_poll : fk->n_poll - 1];
    fk->i_poll++;
  } else {
    ASSERT(fk->n_submit > 0);
    r = fk->submit[fk->i_submit < fk->n_submit ? fk->i_submit : fk->n_submit - 1];
    fk->i_submit++;
  }
  if (r.delay_ms == 0) {
    fake_answer(req, &r);
    return;
  }
  fake_delay_t *d = calloc(1, sizeof(*d));
  ASSERT(d != NULL);
  d->fk = fk;
  d->req = req;
  d->resp = r;
  ASSERT_OK(uv_timer_init(fk->loop, &d->timer));
  d->timer.data = d;
  d->next = fk->delays;
  if (fk->delays)
    fk->delays->prev = d;
  fk->delays = d;
  uv_timer_start(&d->timer, fake_delay_fire, r.delay_ms, 0);
}

static inline void fake_start(fake_t *fk, uv_loop_t *loop) {
  memset(fk, 0, sizeof(*fk));
  fk->loop = loop;
  tb__http_server_options_t o = { .on_request = fake_on_request };
  ASSERT_OK(tb__http_server_init(loop, &fk->http, &o));
  fk->http.data = fk;
  ASSERT_OK(tb__http_server_listen(&fk->http, "127.0.0.1", 0));
  fk->port = tb__http_server_port(&fk->http);
  ASSERT_GT(fk->port, 0);
}

static inline void fake_closed_cb(tb__http_server_t *s) { ((fake_t *)s->data)->closed = 1; }

/* Answers what is still delayed (as it would have been), then closes. */
static inline void fake_stop(fake_t *fk) {
  while (fk->delays != NULL) {
    fake_delay_t *d = fk->delays;
    uv_timer_stop(&d->timer);
    fake_delay_fire(&d->timer);
  }
  tb__http_server_close(&fk->http, fake_closed_cb);
  while (!fk->closed)
    uv_run(fk->loop, UV_RUN_ONCE);
  free(fk->log);
  fk->log = NULL;
}

static inline size_t fake_count(const fake_t *fk, const char *path) {
  size_t n = 0;
  for (size_t i = 0; i < fk->n_log; i++)
    if (strcmp(fk->log[i].path, path) == 0)
      n++;
  return n;
}

/* The k-th logged request on path (0-based), or fails. */
static inline const fake_log_t *fake_nth(const fake_t *fk, const char *path, size_t k) {
  for (size_t i = 0; i < fk->n_log; i++)
    if (strcmp(fk->log[i].path, path) == 0 && k-- == 0)
      return &fk->log[i];
  tb_test_fail(__FILE__, __LINE__, "no request %zu on %s", k, path);
}

#define POLL_PATH "/api/v1/retrieve_future"

/* ------------------------------------------------------------ telemetry */

typedef struct tele_s {
  char names[4096][40];
  char meta[4096][96];     /* one chosen metadata value per event */
  size_t n;
  const char *meta_key;    /* which value to keep; NULL: none */
} tele_t;

static tele_t tele;

static inline void tele_hook(const tb_telemetry_event_t *ev) {
  tele_t *t = ev->data;
  if (t->n >= 4096)
    return;
  snprintf(t->names[t->n], sizeof(t->names[0]), "%s", ev->name);
  t->meta[t->n][0] = '\0';
  for (size_t i = 0; t->meta_key != NULL && i < ev->n_meta; i++)
    if (strcmp(ev->meta[i].key, t->meta_key) == 0)
      snprintf(t->meta[t->n], sizeof(t->meta[0]), "%s", ev->meta[i].value);
  t->n++;
}

static inline size_t tele_count(const char *name) {
  size_t n = 0;
  for (size_t i = 0; i < tele.n; i++)
    if (strcmp(tele.names[i], name) == 0)
      n++;
  return n;
}

/* ------------------------------------------------------------ clients */

static char fake_url[64];

/* A config against the fake with millisecond backoffs. */
static inline tb_client_config_t fake_config(const fake_t *fk) {
  snprintf(fake_url, sizeof(fake_url), "http://127.0.0.1:%d", fk->port);
  tb_client_config_t c = {
    .base_url = fake_url,
    .api_key = "tml-test-key",
    .retry_base_ms = 2,
    .retry_max_ms = 20,
    .poll_backoff_initial_ms = 2,
    .poll_backoff_max_ms = 20,
    .poll_retry_delay_ms = 2,
    .poll_error_backoff_initial_ms = 2,
    .poll_error_backoff_max_ms = 20,
    .telemetry = tele_hook,
    .telemetry_data = &tele,
    .jitter_seed = 12345,
  };
  memset(&tele, 0, sizeof(tele));
  return c;
}

static int rt_closed;
static inline void on_rt_closed(tb__rt_t *rt) { rt_closed++; }

static inline void rt_start(tb__rt_t *rt, uv_loop_t *loop,
                            const tb_client_config_t *cfg) {
  tb_error_t err = { 0 };
  int rc = tb__rt_init(loop, rt, cfg, &err);
  if (rc != 0)
    fprintf(stderr, "rt_init: %s\n", tb_error_message(&err));
  ASSERT_OK(rc);
  rt_closed = 0;
}

static inline void rt_stop(tb__rt_t *rt) {
  tb__client_op_cancel_all(rt);  /* as the service client's close does */
  tb__rt_close(rt, on_rt_closed);
  ASSERT_EQ_INT(rt_closed, 0);
  while (!rt_closed)
    uv_run(rt->loop, UV_RUN_ONCE);
  ASSERT_EQ_INT(rt_closed, 1);
}

/* A decoder whose result is the final body as a string. */
static inline int decode_text(tb__client_op_t *op, const char *body, size_t len, int proto,
                       const tb_result_type_t **type, void **result, tb_error_t *err) {
  char *s = tb__strndup(body ? body : "", body ? len : 0);
  if (s == NULL)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
  *type = &tb_result_string;
  *result = s;
  return 0;
}

/* Starts a polled operation (POST /api/v1/test_op, then retrieve_future). */
static inline tb_future_t *start_polled(tb__rt_t *rt) {
  tb__client_op_opts_t o = { .path = "/api/v1/test_op", .body = "{\"x\":1}", .body_len = 7,
                             .max_retries = -1, .poll = 1, .request_type = "ForwardBackward",
                             .decode = decode_text };
  tb_future_t *f = NULL;
  ASSERT_OK(tb__client_op_start(rt, &o, &f));
  ASSERT(f != NULL);
  return f;
}

#endif /* TB_TEST_CLIENT_FAKE_H */
