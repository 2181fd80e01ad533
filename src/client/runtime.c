/*
 * The runtime under a ServiceClient: resolved configuration, the HTTP
 * client, alarms, jitter, telemetry, and the ordered close.
 *
 * Alarms: every delay of the runtime (retry backoffs, poll backoffs, poll
 * deadlines, completions deferred to a later turn) is a tb__alarm_t in a
 * binary min-heap ordered by (due, seq), under one uv_timer_t armed for the
 * earliest.  Calls, polls and operations therefore own no handle and are
 * freed synchronously, and 10,000 pending futures cost 10,000 heap slots
 * rather than 10,000 timers to close.  The timer re-arms itself from its
 * callback with the next computed delay (redis ae.c).  An alarm armed while
 * alarms are being fired runs on a later turn, never in the same sweep,
 * so a zero delay cannot starve the loop.
 *
 * Close: operations are cancelled, the HTTP client is closed (cancelling
 * whatever it still has), and once no operation, call, poll or alarm is
 * left the timer is closed and the close callback runs.
 */
#include "client/internal.h"

#include "http/tls.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ alarms */

static int alarm_before(const tb__alarm_t *a, const tb__alarm_t *b) {
  return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_set(tb__rt_t *rt, size_t i, tb__alarm_t *a) {
  rt->heap[i] = a;
  a->index = i;
}

static void heap_up(tb__rt_t *rt, size_t i) {
  tb__alarm_t *a = rt->heap[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!alarm_before(a, rt->heap[p]))
      break;
    heap_set(rt, i, rt->heap[p]);
    i = p;
  }
  heap_set(rt, i, a);
}

static void heap_down(tb__rt_t *rt, size_t i) {
  tb__alarm_t *a = rt->heap[i];
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    const tb__alarm_t *best = a;
    if (l < rt->n_heap && alarm_before(rt->heap[l], best)) {
      m = l;
      best = rt->heap[l];
    }
    if (r < rt->n_heap && alarm_before(rt->heap[r], best))
      m = r;
    if (m == i)
      break;
    heap_set(rt, i, rt->heap[m]);
    i = m;
  }
  heap_set(rt, i, a);
}

static void heap_remove(tb__rt_t *rt, tb__alarm_t *a) {
  size_t i = a->index;
  a->index = SIZE_MAX;
  rt->n_heap--;
  if (i == rt->n_heap)
    return;
  tb__alarm_t *last = rt->heap[rt->n_heap];
  heap_set(rt, i, last);
  heap_down(rt, i);
  heap_up(rt, last->index);
}

static void on_timer(uv_timer_t *t);

/* Arms the uv timer for the earliest alarm, or stops it. */
static void rearm(tb__rt_t *rt) {
  if (rt->n_heap == 0) {
    uv_timer_stop(&rt->timer);
    return;
  }
  uint64_t now = uv_now(rt->loop), due = rt->heap[0]->due;
  uv_timer_start(&rt->timer, on_timer, due > now ? due - now : 0, 0);
}

void tb__alarm_init(tb__alarm_t *a, tb__alarm_cb cb, void *data) {
  memset(a, 0, sizeof(*a));
  a->cb = cb;
  a->data = data;
  a->index = SIZE_MAX;
}

static int heap_grow(tb__rt_t *rt, size_t want) {
  if (want <= rt->cap_heap)
    return 0;
  size_t cap = rt->cap_heap ? rt->cap_heap * 2 : 64;
  if (cap < want)
    cap = want;
  tb__alarm_t **h = realloc(rt->heap, cap * sizeof(*h));
  if (h == NULL)
    return TB_ENOMEM;
  rt->heap = h;
  rt->cap_heap = cap;
  return 0;
}

int tb__alarm_reserve(tb__rt_t *rt, size_t n) {
  int rc = heap_grow(rt, rt->n_reserved + n);
  if (rc == 0)
    rt->n_reserved += n;
  return rc;
}

void tb__alarm_unreserve(tb__rt_t *rt, size_t n) { rt->n_reserved -= n; }

int tb__alarm_start(tb__rt_t *rt, tb__alarm_t *a, uint64_t delay_ms) {
  if (tb__alarm_armed(a))
    heap_remove(rt, a);
  if (rt->n_heap == rt->cap_heap && heap_grow(rt, rt->n_heap + 1) != 0)
    return TB_ENOMEM;
  uint64_t now = uv_now(rt->loop);
  a->due = delay_ms > UINT64_MAX - now ? UINT64_MAX : now + delay_ms;
  a->seq = rt->alarm_seq++;
  rt->heap[rt->n_heap] = a;
  a->index = rt->n_heap++;
  heap_up(rt, a->index);
  if (rt->heap[0] == a)
    rearm(rt);
  return 0;
}

void tb__alarm_stop(tb__rt_t *rt, tb__alarm_t *a) {
  if (!tb__alarm_armed(a))
    return;
  int was_first = rt->heap[0] == a;
  heap_remove(rt, a);
  if (was_first)
    rearm(rt);
}

static void maybe_closed(tb__rt_t *rt);

static void on_timer(uv_timer_t *t) {
  tb__rt_t *rt = t->data;
  uint64_t now = uv_now(rt->loop), limit = rt->alarm_seq;
  while (rt->n_heap > 0 && rt->heap[0]->due <= now && rt->heap[0]->seq < limit) {
    tb__alarm_t *a = rt->heap[0];
    heap_remove(rt, a);
    a->cb(a);  /* may arm and stop alarms, and free a */
  }
  rearm(rt);
  maybe_closed(rt);
}

/* ------------------------------------------------------------ helpers */

static uint64_t next_rand(tb__rt_t *rt) {
  /* xorshift64*: plenty for jitter; not for secrets. */
  uint64_t x = rt->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  rt->rng = x;
  return x * 0x2545F4914F6CDD1DULL;
}

double tb__rt_jitter(tb__rt_t *rt, double lo, double hi) {
  double u = (double)(next_rand(rt) >> 11) / 9007199254740992.0;  /* [0, 1) */
  return lo + (hi - lo) * u;
}

void tb__rt_random_hex(tb__rt_t *rt, char *out, size_t n_bytes) {
  static const char hex[] = "0123456789abcdef";
  unsigned char buf[32];
  if (n_bytes > sizeof(buf))
    n_bytes = sizeof(buf);
  /* Idempotency keys must not collide between processes: the kernel's
   * random bytes when available, the generator otherwise. */
  if (uv_random(NULL, NULL, buf, n_bytes, 0, NULL) != 0)
    for (size_t i = 0; i < n_bytes; i++)
      buf[i] = (unsigned char)next_rand(rt);
  for (size_t i = 0; i < n_bytes; i++) {
    out[2 * i] = hex[buf[i] >> 4];
    out[2 * i + 1] = hex[buf[i] & 15];
  }
  out[2 * n_bytes] = '\0';
}

char *tb__rt_url(const tb__rt_t *rt, const char *path) {
  return tb__asprintf("%s%s", rt->cfg.base_url, path);
}

void tb__rt_telemetry(tb__rt_t *rt, const char *name,
                      const tb_telemetry_measure_t *measures, size_t n_measures,
                      const tb_telemetry_meta_t *meta, size_t n_meta) {
  if (rt->cfg.telemetry == NULL)
    return;
  tb_telemetry_meta_t all[24];
  size_t n = 0;
  for (size_t i = 0; i < n_meta && n < 24; i++)
    if (meta[i].value != NULL)
      all[n++] = meta[i];
  for (size_t i = 0; i < rt->cfg.n_meta && n < 24; i++)
    all[n++] = rt->cfg.meta[i];
  tb_telemetry_event_t ev = { rt->cfg.telemetry_data, name, measures, n_measures,
                              all, n };
  tb__loop_frame_t frame;
  tb__loop_enter(&frame, rt->loop);
  rt->cfg.telemetry(&ev);
  tb__loop_leave(&frame);
}

const char *tb_queue_state_name(tb_queue_state_t s) {
  switch (s) {
    case TB_QUEUE_ACTIVE: return "active";
    case TB_QUEUE_PAUSED_CAPACITY: return "paused_capacity";
    case TB_QUEUE_PAUSED_RATE_LIMIT: return "paused_rate_limit";
    default: return "unknown";
  }
}

/* ------------------------------------------------------------ lifecycle */

/* The HTTP requests polls borrow (poll.c): at most three quarters of the
 * connections are lent to polls at once, so a submission always finds one. */
static int wires_init(tb__rt_t *rt) {
  unsigned c = rt->cfg.max_connections;
  rt->max_poll_wires = c > 1 ? c - c / 4 : 1;
  rt->poll_url = tb__rt_url(rt, "/api/v1/retrieve_future");
  return rt->poll_url != NULL ? 0 : TB_ENOMEM;
}

static void wires_free(tb__rt_t *rt) {
  while (rt->wires_free != NULL) {
    tb__wire_t *w = rt->wires_free;
    rt->wires_free = w->next;
    tb__http_client_req_free(&w->http);
    tb__buf_free(&w->body);
    free(w);
  }
  rt->n_wires = 0;
  free(rt->poll_url);
  rt->poll_url = NULL;
}


int tb__rt_init(uv_loop_t *loop, tb__rt_t *rt, const tb_client_config_t *cfg,
                tb_error_t *err) {
  memset(rt, 0, sizeof(*rt));
  rt->loop = loop;
  int rc = tb__config_resolve(cfg, &rt->cfg, err);
  if (rc != 0)
    return rc;
  rt->rng = rt->cfg.jitter_seed != 0 ? rt->cfg.jitter_seed
                                     : (uv_hrtime() ^ (uintptr_t)rt) | 1;
  if (wires_init(rt) != 0) {
    tb__config_free(&rt->cfg);
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
  }
  tb__http_client_opts_t ho = {
    .max_conns_per_origin = rt->cfg.max_connections,
    .connect_timeout_ms = rt->cfg.connect_timeout_ms,
    .user_agent = "tinkerbell-c/" TB_VERSION_STRING,
  };
  if (rt->cfg.tls) {
    rc = tb__tls_ctx_client_new(rt->cfg.tls_ca_file, rt->cfg.tls_insecure, &rt->tls_ctx, err);
    if (rc != 0) {
      wires_free(rt);
      tb__config_free(&rt->cfg);
      return rc;
    }
    ho.tls_transport_new = tb__transport_tls_new;
    ho.tls_ctx = rt->tls_ctx;
  }
  rc = tb__http_client_init(loop, &rt->http, &ho);
  if (rc != 0) {
    tb__tls_ctx_free(rt->tls_ctx);
    rt->tls_ctx = NULL;
    wires_free(rt);
    tb__config_free(&rt->cfg);
    return tb_error_set(err, rc, TB_CATEGORY_NONE, "HTTP client: %s", tb_strerror(rc));
  }
  rt->http.data = rt;
  /* uv_timer_init cannot fail (libuv's timer.c only fills the handle in),
   * so nothing made above ever needs an asynchronous undo here. */
  (void)uv_timer_init(loop, &rt->timer);
  rt->timer.data = rt;
  rt->handles_open = 2;  /* the HTTP client and the timer */
  return 0;
}

static void on_timer_closed(uv_handle_t *h) {
  tb__rt_t *rt = h->data;
  rt->handles_open--;
  free(rt->heap);
  rt->heap = NULL;
  wires_free(rt);
  /* Every connection is gone with the HTTP client: the context may go. */
  tb__tls_ctx_free(rt->tls_ctx);
  rt->tls_ctx = NULL;
  tb__config_free(&rt->cfg);
  tb__rt_close_cb cb = rt->close_cb;
  if (cb != NULL)
    cb(rt);
}

static void maybe_closed(tb__rt_t *rt) {
  /* handles_open == 1: the HTTP client is closed, the timer is not. */
  if (!rt->closing || rt->handles_open != 1 || rt->n_ops != 0 || rt->n_busy != 0 ||
      rt->n_heap != 0)
    return;
  rt->closing = 2;  /* the timer is closing */
  uv_close((uv_handle_t *)&rt->timer, on_timer_closed);
}

static void on_http_closed(tb__http_client_t *c) {
  tb__rt_t *rt = c->data;
  rt->handles_open--;
  maybe_closed(rt);
}

void tb__rt_check_closed(tb__rt_t *rt) {
  if (rt->closing == 1)
    maybe_closed(rt);
}

void tb__rt_close(tb__rt_t *rt, tb__rt_close_cb close_cb) {
  if (rt->closing)
    return;
  rt->closing = 1;
  rt->close_cb = close_cb;
  tb__http_client_close(&rt->http, on_http_closed);
}
