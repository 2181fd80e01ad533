/*
 * The ServiceClient: the runtime (configuration, connections, alarms), the
 * session created on first use and kept alive by a heartbeat, and the
 * service-level operations (get_server_capabilities).
 *
 * Session creation is shared: the first caller starts one create_session
 * operation, every caller until it ends gets a "waiter" future of its own
 * that completes with a copy of the outcome.  A caller that comes once the
 * session exists gets a waiter completed on the next loop turn (a future
 * never completes inside the call that made it).
 *
 * The heartbeat runs on its own unreferenced uv_timer_t, so an idle client
 * does not keep the host's loop alive; one heartbeat at most is in flight,
 * with no retries.
 *
 * The end of the session: tb_service_client_close sends close_session for
 * the session the client created (unless the config keeps it open), once,
 * with no retries and under close_timeout_ms, after cancelling the work in
 * flight, and closes the runtime whatever the answer -- a server that is
 * gone or silent costs the close that timeout at most.  The session's
 * models would otherwise hold the server's memory until the heartbeat
 * timeout.  tb_service_client_close_session does the same as an operation
 * of its own; the heartbeat stops when it is sent.
 */
#include "tinkerbell/service_client.h"

#include <stdlib.h>
#include <string.h>

#include "client/answer.h"
#include "client/clients.h"
#include "client/internal.h"
#include "core/json.h"
#include "core/log.h"
#include "wire/service.h"

typedef struct waiter_s {
  tb_future_t *f;
  struct tb__service_s *svc;
  tb__alarm_t alarm;              /* completes a cancelled or late waiter */
  int cancelled;
  struct waiter_s *next, *prev;
} waiter_t;

struct tb__service_s {
  tb_service_client_t *sc;
  tb__rt_t rt;
  char *session_id;
  tb_future_t *create_f;          /* the create_session in flight */
  waiter_t *waiters;              /* waiting for create_f */
  waiter_t *ready;                /* completed on the next turn */
  uv_timer_t hb_timer;
  tb__call_t hb_call;
  tb__buf_t hb_body;
  int hb_inflight;
  int hb_warned;
  tb__call_t close_call;          /* close_session at close */
  tb__buf_t close_body;
  int close_inflight;
  int session_closed;             /* close_session was sent */
  uint64_t hb_last_ok;
  int closing;
  int pending_closes;             /* the runtime and the heartbeat timer */
  int64_t model_seq;              /* the next model_seq_id of the session */
  int64_t sampling_seq;           /* the next sampling_session_seq_id */
};

static void sc_destroy_maybe(struct tb__service_s *s);
static void on_rt_closed(tb__rt_t *rt);

/* ------------------------------------------------------------ results */

static void free_caps(void *p) { tb_server_capabilities_free(p); }

const tb_result_type_t tb_result_server_capabilities = { "server_capabilities",
                                                         free_caps };

void tb_server_capabilities_free(tb_server_capabilities_t *caps) {
  if (caps == NULL)
    return;
  for (size_t i = 0; i < caps->n_models; i++)
    free(caps->models[i].model_name);
  free(caps->models);
  free(caps);
}

static int decode_caps(tb__client_op_t *op, const char *body, size_t len, int proto,
                       const tb_result_type_t **type, void **result, tb_error_t *err) {
  TB__DECODE_FIELDS(tb__wire_capabilities_t,
                    tb__wire_capabilities_from_json(&d.jc, &d.arena, d.doc, &w),
                    "get_server_capabilities");
  tb_server_capabilities_t *caps = calloc(1, sizeof(*caps));
  int ok = caps != NULL;
  if (ok && w.n_models > 0 && (caps->models = calloc(w.n_models, sizeof(*caps->models))) == NULL)
    ok = 0;
  for (size_t i = 0; ok && i < w.n_models; i++, caps->n_models++) {
    caps->models[i].model_name = tb__answer_dup(w.models[i].model_name, &ok);
    caps->models[i].max_context_length = w.models[i].max_context_length;
  }
  return tb__answer_result(&d, ok, &tb_result_server_capabilities, caps, type, result, err);
}

static int decode_session(tb__client_op_t *op, const char *body, size_t len, int proto,
                          const tb_result_type_t **type, void **result, tb_error_t *err) {
  TB__DECODE_FIELDS(tb__wire_session_created_t,
                    tb__wire_session_created_from_json(&d.jc, d.doc, &w), "create_session");
  /* What the server wants the user to read, as the SDK logs it. */
  if (w.info_message != NULL)
    tb__info("session %s: %s", w.session_id, w.info_message);
  if (w.warning_message != NULL)
    tb__warn("session %s: %s", w.session_id, w.warning_message);
  if (w.error_message != NULL)
    tb__log_error("session %s: %s", w.session_id, w.error_message);
  return tb__answer_string(&d, w.session_id, type, result, err);
}

/* ------------------------------------------------------------ heartbeat */

static void on_heartbeat(tb__call_t *call, int status) {
  struct tb__service_s *s = call->data;
  s->hb_inflight = 0;
  if (status == 0) {
    s->hb_last_ok = uv_now(s->rt.loop);
    s->hb_warned = 0;
  }
  tb__call_free(call);
  if (s->closing)
    sc_destroy_maybe(s);
}

static void heartbeat_tick(uv_timer_t *t) {
  struct tb__service_s *s = t->data;
  uint64_t now = uv_now(s->rt.loop);
  if (!s->hb_warned && now - s->hb_last_ok >= s->rt.cfg.heartbeat_warn_ms) {
    s->hb_warned = 1;
    tb_telemetry_measure_t m[] = { { "since_success_ms", (double)(now - s->hb_last_ok) } };
    tb_telemetry_meta_t meta[] = { { "session_id", s->session_id },
                                   { "severity", "WARNING" } };
    tb__rt_telemetry(&s->rt, "session.heartbeat_warning", m, 1, meta, 2);
  }
  if (s->hb_inflight || s->closing || s->session_closed)
    return;
  tb__wire_session_call_t hb = { tb__wire_str(s->session_id), "session_heartbeat" };
  if (tb__body_from_wire(tb__wire_session_call_to_json(&hb), &s->hb_body) != 0)
    return;  /* out of memory: the next tick tries again */
  memset(&s->hb_call, 0, sizeof(s->hb_call));
  s->hb_call.data = s;
  s->hb_call.path = "/api/v1/session_heartbeat";
  s->hb_call.body = tb__buf_slice(&s->hb_body);
  s->hb_call.max_retries = 0;
  s->hb_call.timeout_ms = s->rt.cfg.heartbeat_interval_ms < 10000
                              ? s->rt.cfg.heartbeat_interval_ms : 10000;
  if (tb__call_start(&s->rt, &s->hb_call, on_heartbeat) == 0)
    s->hb_inflight = 1;
  else
    tb__call_free(&s->hb_call);
}

/* ------------------------------------------------------------ closing the session */

/* {"session_id", "type": "close_session"} into out. */
static int close_body(struct tb__service_s *s, tb__buf_t *out) {
  tb__wire_session_call_t c = { tb__wire_str(s->session_id), "close_session" };
  return tb__body_from_wire(tb__wire_session_call_to_json(&c), out);
}

/* From now on the session is the server's to forget: no heartbeats, no
 * second close. */
static void session_done(struct tb__service_s *s) {
  s->session_closed = 1;
  uv_timer_stop(&s->hb_timer);
}

static void on_close_call(tb__call_t *call, int status) {
  struct tb__service_s *s = call->data;
  s->close_inflight = 0;
  if (status != 0)
    tb__debug("close_session: %s", tb_error_message(&call->err));
  tb__call_free(call);
  sc_destroy_maybe(s);
}

/* At close: sends close_session once, bounded; 0 when it is in flight. */
static int send_close(struct tb__service_s *s) {
  if (s->session_id == NULL || s->session_closed || s->rt.cfg.keep_session_open)
    return TB_EINVAL;
  if (close_body(s, &s->close_body) != 0)
    return TB_ENOMEM;
  session_done(s);
  memset(&s->close_call, 0, sizeof(s->close_call));
  s->close_call.data = s;
  s->close_call.path = "/api/v1/close_session";
  s->close_call.body = tb__buf_slice(&s->close_body);
  s->close_call.max_retries = 0;
  s->close_call.timeout_ms = s->rt.cfg.close_timeout_ms;
  int rc = tb__call_start(&s->rt, &s->close_call, on_close_call);
  if (rc != 0) {
    tb__call_free(&s->close_call);
    return rc;
  }
  s->close_inflight = 1;
  return 0;
}

int tb_service_client_close_session(tb_service_client_t *sc, tb_future_t **out) {
  if (sc == NULL || out == NULL || sc->impl_ == NULL)
    return TB_EINVAL;
  struct tb__service_s *s = sc->impl_;
  *out = NULL;
  if (s->closing)
    return TB_ECLOSING;
  if (s->session_id == NULL || s->session_closed)
    return TB_EINVAL;  /* no session yet, or closed already */
  tb__buf_t body = { 0 };
  if (close_body(s, &body) != 0) {
    tb__buf_free(&body);
    return TB_ENOMEM;
  }
  tb__client_op_opts_t o = { .path = "/api/v1/close_session", .body = body.base,
                             .body_len = body.len, .max_retries = -1 };
  int rc = tb__client_op_start(&s->rt, &o, out);
  tb__buf_free(&body);
  if (rc == 0)
    session_done(s);
  return rc;
}

/* ------------------------------------------------------------ session */

static void unlink_waiter(waiter_t **head, waiter_t *w) {
  if (w->prev != NULL)
    w->prev->next = w->next;
  else
    *head = w->next;
  if (w->next != NULL)
    w->next->prev = w->prev;
  w->next = w->prev = NULL;
}

static void push_waiter(waiter_t **head, waiter_t *w) {
  w->prev = NULL;
  w->next = *head;
  if (*head != NULL)
    (*head)->prev = w;
  *head = w;
}

/* Completes a waiter with the session id or err (copied), and frees it. */
static void complete_waiter(waiter_t *w, const char *session_id, const tb_error_t *err) {
  tb_future_t *f = w->f;
  int cancelled = w->cancelled;
  tb__alarm_stop(&w->svc->rt, &w->alarm);
  tb__alarm_unreserve(&w->svc->rt, 1);
  free(w);
  tb_error_t e = { 0 };
  if (cancelled || err != NULL || session_id == NULL) {
    if (err != NULL && tb_error_copy(&e, err) != 0)
      tb_error_set(&e, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
    else if (err == NULL)
      tb_error_set(&e, TB_ECANCELED, TB_CATEGORY_CANCELLED, "create_session: cancelled");
    tb__client_future_fail(f, &e);
    return;
  }
  char *copy = strdup(session_id);
  if (copy == NULL) {
    tb_error_set(&e, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
    tb__client_future_fail(f, &e);
    return;
  }
  tb__client_future_resolve(f, &tb_result_string, copy);
}

static void on_waiter_alarm(tb__alarm_t *a) {
  waiter_t *w = a->data;
  struct tb__service_s *s = w->svc;
  unlink_waiter(&s->ready, w);
  int cancelled = w->cancelled;
  /* w is freed by complete_waiter; read what is needed first. */
  if (cancelled) {
    tb_error_t e = { 0 };
    tb_error_set(&e, TB_ECANCELED, TB_CATEGORY_CANCELLED, "create_session: cancelled");
    complete_waiter(w, NULL, &e);
    tb_error_clear(&e);
  } else {
    complete_waiter(w, s->session_id, NULL);
  }
  tb__rt_check_closed(&s->rt);
  if (s->closing)
    sc_destroy_maybe(s);
}

static void cancel_waiter(tb_future_t *f) {
  waiter_t *w = f->driver_;
  struct tb__service_s *s = w->svc;
  w->cancelled = 1;
  if (!tb__alarm_armed(&w->alarm)) {
    unlink_waiter(&s->waiters, w);
    push_waiter(&s->ready, w);
  }
  tb__alarm_start(&s->rt, &w->alarm, 0);
}

static void on_created(tb_future_t *f, int status) {
  struct tb__service_s *s = f->data;
  s->create_f = NULL;
  if (status == 0) {
    s->session_id = tb_future_take(f, &tb_result_string);
    s->sc->session_id = s->session_id;
    s->hb_last_ok = uv_now(s->rt.loop);
    if (!s->closing) {
      uint64_t iv = s->rt.cfg.heartbeat_interval_ms;
      uv_timer_start(&s->hb_timer, heartbeat_tick, iv, iv);
    }
  }
  while (s->waiters != NULL) {
    waiter_t *w = s->waiters;
    unlink_waiter(&s->waiters, w);
    complete_waiter(w, s->session_id, status == 0 ? NULL : &f->error);
  }
  tb_future_free(f);
  if (s->closing)
    sc_destroy_maybe(s);
}

static int start_create(struct tb__service_s *s) {
  const tb__config_t *cfg = &s->rt.cfg;
  tb__wire_pair_t *meta = calloc(cfg->n_user_metadata + 1, sizeof(*meta));
  if (meta == NULL)
    return TB_ENOMEM;
  for (size_t i = 0; i < cfg->n_user_metadata; i++)
    meta[i] = (tb__wire_pair_t){ cfg->user_metadata[i].key, cfg->user_metadata[i].value };
  tb__wire_create_session_t r = { .tags = (const char *const *)cfg->tags,
                                  .n_tags = cfg->n_tags,
                                  .user_metadata = meta,
                                  .n_user_metadata = cfg->n_user_metadata,
                                  .sdk_version = TB_SLICE_LIT(TB_VERSION_STRING),
                                  .project_id = tb__wire_str(cfg->project_id) };
  json_t *b = tb__wire_create_session_to_json(&r);
  free(meta);
  tb__client_op_opts_t o = { .path = "/api/v1/create_session", .max_retries = -1,
                             .decode = decode_session };
  int rc = tb__client_op_start_json(&s->rt, &o, b, &s->create_f);
  if (rc != 0)
    return rc;
  s->create_f->data = s;
  tb_future_set_callback(s->create_f, on_created);
  return 0;
}

int tb_service_client_session(tb_service_client_t *sc, tb_future_t **out) {
  if (sc == NULL || out == NULL || sc->impl_ == NULL)
    return TB_EINVAL;
  struct tb__service_s *s = sc->impl_;
  *out = NULL;
  if (s->closing || s->session_closed)
    return TB_ECLOSING;
  waiter_t *w = calloc(1, sizeof(*w));
  tb_future_t *f = tb__client_future_new(sc->loop);
  if (w == NULL || f == NULL) {
    free(w);
    free(f);
    return TB_ENOMEM;
  }
  w->f = f;
  w->svc = s;
  tb__alarm_init(&w->alarm, on_waiter_alarm, w);
  /* A slot for the alarm that completes a cancelled or late waiter. */
  int rc = tb__alarm_reserve(&s->rt, 1);
  if (rc == 0 && s->session_id == NULL && s->create_f == NULL) {
    rc = start_create(s);
    if (rc != 0)
      tb__alarm_unreserve(&s->rt, 1);
  }
  if (rc != 0) {
    free(w);
    free(f);
    return rc;
  }
  if (s->session_id != NULL) {
    tb__alarm_start(&s->rt, &w->alarm, 0);
    push_waiter(&s->ready, w);
  } else {
    push_waiter(&s->waiters, w);
  }
  tb__client_future_set_driver(f, cancel_waiter, w);
  *out = f;
  return 0;
}

/* ------------------------------------------------------------ capabilities */

int tb_service_client_get_server_capabilities(tb_service_client_t *sc, tb_future_t **out) {
  if (sc == NULL || out == NULL || sc->impl_ == NULL)
    return TB_EINVAL;
  struct tb__service_s *s = sc->impl_;
  if (s->closing)
    return TB_ECLOSING;
  tb__client_op_opts_t o = { .method = "GET", .path = "/api/v1/get_server_capabilities",
                      .max_retries = -1, .decode = decode_caps };
  return tb__client_op_start(&s->rt, &o, out);
}

/* ------------------------------------------------------------ _sync */

int tb_service_client_session_sync(tb_service_client_t *sc, char **session_id,
                                   tb_error_t *err) {
  tb_future_t *f;
  int rc = tb_service_client_session(sc, &f);
  if (rc != 0)
    return tb_error_set(err, rc, TB_CATEGORY_USER, "session: %s", tb_strerror(rc));
  return tb__client_wait_take(&sc->impl_->rt, f, &tb_result_string, (void **)session_id,
                              err);
}

int tb_service_client_close_session_sync(tb_service_client_t *sc, tb_error_t *err) {
  tb_future_t *f;
  int rc = tb_service_client_close_session(sc, &f);
  if (rc != 0)
    return tb_error_set(err, rc, TB_CATEGORY_USER, "close_session: %s", tb_strerror(rc));
  return tb__client_wait_take(&sc->impl_->rt, f, NULL, NULL, err);
}

int tb_service_client_get_server_capabilities_sync(tb_service_client_t *sc,
                                                   tb_server_capabilities_t **caps,
                                                   tb_error_t *err) {
  tb_future_t *f;
  int rc = tb_service_client_get_server_capabilities(sc, &f);
  if (rc != 0)
    return tb_error_set(err, rc, TB_CATEGORY_USER, "get_server_capabilities: %s",
                        tb_strerror(rc));
  return tb__client_wait_take(&sc->impl_->rt, f, &tb_result_server_capabilities,
                              (void **)caps, err);
}

/* ------------------------------------------------------------ lifecycle */

int tb_service_client_init(uv_loop_t *loop, tb_service_client_t *sc,
                           const tb_client_config_t *cfg, tb_error_t *err) {
  if (loop == NULL || sc == NULL)
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER, "NULL loop or client");
  memset(sc, 0, sizeof(*sc));
  struct tb__service_s *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
  int rc = tb__rt_init(loop, &s->rt, cfg, err);
  if (rc != 0) {
    free(s);
    return rc;
  }
  rc = uv_timer_init(loop, &s->hb_timer);
  if (rc != 0) {
    /* The runtime frees its parts in its close; s goes with it. */
    s->rt.data = s;
    tb__rt_close(&s->rt, on_rt_closed);
    return tb_error_set(err, rc, TB_CATEGORY_NONE, "timer: %s", tb_strerror(rc));
  }
  uv_unref((uv_handle_t *)&s->hb_timer);
  s->hb_timer.data = s;
  s->rt.data = s;
  s->sc = sc;
  sc->loop = loop;
  sc->impl_ = s;
  return 0;
}

static void sc_finished(struct tb__service_s *s) {
  tb_service_client_t *sc = s->sc;
  tb__buf_free(&s->hb_body);
  tb__buf_free(&s->close_body);
  free(s->session_id);
  free(s);
  sc->impl_ = NULL;
  sc->session_id = NULL;
  tb_service_client_close_cb cb = sc->close_cb_;
  if (cb != NULL) {
    tb__loop_frame_t frame;
    tb__loop_enter(&frame, sc->loop);
    cb(sc);
    tb__loop_leave(&frame);
  }
}

static void on_rt_closed(tb__rt_t *rt) {
  struct tb__service_s *s = rt->data;
  if (s->sc == NULL) {  /* a failed init */
    free(s);
    return;
  }
  if (--s->pending_closes == 0)
    sc_finished(s);
}

static void on_hb_closed(uv_handle_t *h) {
  struct tb__service_s *s = h->data;
  if (--s->pending_closes == 0)
    sc_finished(s);
}

/* The runtime is closed once the heartbeat and the waiters are done: they
 * use its alarms and calls. */
static void sc_destroy_maybe(struct tb__service_s *s) {
  if (s->closing != 1 || s->hb_inflight || s->close_inflight || s->ready != NULL ||
      s->waiters != NULL || s->create_f != NULL)
    return;
  s->closing = 2;
  /* Callbacks of the work cancelled at close may have started more. */
  tb__client_op_cancel_all(&s->rt);
  tb__rt_close(&s->rt, on_rt_closed);
}

void tb_service_client_close(tb_service_client_t *sc, tb_service_client_close_cb close_cb) {
  if (sc == NULL || sc->impl_ == NULL)
    return;
  struct tb__service_s *s = sc->impl_;
  if (s->closing)
    return;
  s->closing = 1;
  sc->close_cb_ = close_cb;
  s->pending_closes = 2;
  uv_timer_stop(&s->hb_timer);
  uv_close((uv_handle_t *)&s->hb_timer, on_hb_closed);
  if (s->hb_inflight)
    tb__call_cancel(&s->hb_call);
  if (s->create_f != NULL)
    tb_future_cancel(s->create_f);  /* its callback fails the waiters */
  for (waiter_t *w = s->ready; w != NULL; w = w->next)
    w->cancelled = 1;
  /* The work in flight is cancelled first: the session goes after it. */
  tb__client_op_cancel_all(&s->rt);
  send_close(s);
  sc_destroy_maybe(s);
}

/* ------------------------------------------------------------ for the clients made here */

tb__rt_t *tb__service_rt(tb_service_client_t *sc) {
  if (sc == NULL || sc->impl_ == NULL || sc->impl_->closing)
    return NULL;
  return &sc->impl_->rt;
}

int64_t tb__service_next_model_seq(tb_service_client_t *sc) {
  return sc->impl_->model_seq++;
}

int64_t tb__service_next_sampling_seq(tb_service_client_t *sc) {
  return sc->impl_->sampling_seq++;
}
