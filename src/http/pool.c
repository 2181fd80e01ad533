/*
 * The HTTP client's handle and connection pool (see client.h): origins,
 * name resolution, connecting to each address in turn, idle keep-alive
 * connections, the timer that enforces request deadlines and idle expiry,
 * deferred completions, and closing.
 *
 * Ownership: the client owns its origins, an origin its connections, a
 * connection its transport while open.  A request borrows a connection
 * from the moment it is assigned until it completes; when a request is
 * failed or cancelled mid-exchange its connection is discarded, since the
 * state of the stream is unknown.  A discarded connection is freed at
 * once, or after its name lookup returns if one is running; transports
 * free themselves once closed.  The client counts both, and calls the
 * close callback only when none is left, so the host's loop can close.
 *
 * Only the timer and the idle connections could keep the loop alive
 * without anything to wait for; both are unref'd when no request is in
 * flight.
 */
#include "http/client.h"

#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_MAX_CONNS 8u
#define DEFAULT_IDLE_MS 30000u
#define DEFAULT_CONNECT_MS 10000u

#define LINK_DATA(ptr, type, field) \
  ((type *)(void *)((char *)(ptr) - offsetof(type, field)))

/* ------------------------------------------------------------- lists */

static void link_init(tb__http_link_t *l) { l->next = l->prev = l; }

static int link_empty(const tb__http_link_t *h) { return h->next == h; }

static void link_remove(tb__http_link_t *l) {
  if (l->next == NULL || l->next == l)
    return; /* never linked, or already removed */
  l->prev->next = l->next;
  l->next->prev = l->prev;
  link_init(l);
}

static void link_insert_tail(tb__http_link_t *h, tb__http_link_t *l) {
  l->next = h;
  l->prev = h->prev;
  h->prev->next = l;
  h->prev = l;
}

static void link_insert_head(tb__http_link_t *h, tb__http_link_t *l) {
  l->prev = h;
  l->next = h->next;
  h->next->prev = l;
  h->next = l;
}

/* -------------------------------------------------------------- timer */

static void on_timer(uv_timer_t *t);

static void update_ref(tb__http_client_t *c) {
  if (c->n_active_ > 0)
    uv_ref((uv_handle_t *)&c->timer_);
  else
    uv_unref((uv_handle_t *)&c->timer_);
}

/* Makes the timer fire no later than `due` (a uv_now time; 0: never). */
static void arm(tb__http_client_t *c, uint64_t due) {
  if (due == 0 || c->closing_)
    return;
  if (c->timer_due_ != 0 && c->timer_due_ <= due)
    return;
  uint64_t now = uv_now(c->loop);
  c->timer_due_ = due;
  uv_timer_start(&c->timer_, on_timer, due > now ? due - now : 0, 0);
}

/* ------------------------------------------------------------ closing */

static void maybe_finish_close(tb__http_client_t *c) {
  if (!c->closing_ || c->n_handles_ > 0 || c->n_conns_ > 0 ||
      c->n_transports_ > 0 || !link_empty(&c->deferred_))
    return;
  while (!link_empty(&c->origins_)) {
    tb__http_link_t *l = c->origins_.next;
    struct tb__http_origin_s *o = LINK_DATA(l, struct tb__http_origin_s, link);
    link_remove(l);
    free(o->host);
    free(o);
  }
  free(c->user_agent_);
  c->user_agent_ = NULL;
  tb__http_client_close_cb cb = c->close_cb_;
  c->close_cb_ = NULL;
  if (cb != NULL)
    cb(c);
}

static void on_transport_closed(tb__transport_t *t) {
  tb__http_client_t *c = t->data;
  c->n_transports_--;
  maybe_finish_close(c);
}

static void close_transport(tb__http_client_t *c, tb__transport_t *t) {
  t->data = c;
  tb__transport_close(t, on_transport_closed);
}

static void on_timer_closed(uv_handle_t *h) {
  tb__http_client_t *c = h->data;
  c->n_handles_--;
  maybe_finish_close(c);
}

/* ------------------------------------------------------- connections */

static void free_conn(struct tb__http_conn_s *conn) {
  tb__http_client_t *c = conn->client;
  if (conn->ai != NULL)
    uv_freeaddrinfo(conn->ai);
  free(conn);
  c->n_conns_--;
  maybe_finish_close(c);
}

void tb__http_pool_discard(struct tb__http_conn_s *conn) {
  tb__http_client_t *c = conn->client;
  link_remove(&conn->link);
  conn->origin->n_conns--;
  if (conn->req != NULL) {
    conn->req->conn_ = NULL;
    conn->req = NULL;
  }
  if (conn->t != NULL) {
    close_transport(c, conn->t);
    conn->t = NULL;
  }
  if (conn->state == TB__CONN_RESOLVING) {
    /* The lookup's callback runs either way (with UV_EAI_CANCELED when
     * the cancel took); the connection is freed there. */
    conn->dead = 1;
    uv_cancel((uv_req_t *)&conn->gai);
    return;
  }
  free_conn(conn);
}

void tb__http_pool_discard_idle(struct tb__http_conn_s *conn) {
  struct tb__http_origin_s *o = conn->origin;
  tb__http_pool_discard(conn);
  tb__http_pool_dispatch(o);
}

void tb__http_conn_release(struct tb__http_conn_s *conn, int keep) {
  tb__http_client_t *c = conn->client;
  struct tb__http_origin_s *o = conn->origin;
  conn->req->conn_ = NULL;
  conn->req = NULL;
  if (!keep || c->closing_) {
    tb__http_pool_discard(conn);
    return;
  }
  conn->state = TB__CONN_IDLE;
  conn->idle_deadline = uv_now(c->loop) + c->opts_.idle_timeout_ms;
  link_remove(&conn->link);
  link_insert_head(&o->idle, &conn->link);
  tb__transport_set_ref(conn->t, 0);
  arm(c, conn->idle_deadline);
}

void tb__http_conn_fail(struct tb__http_conn_s *conn, int status) {
  tb__http_client_req_t *req = conn->req;
  tb__http_pool_discard(conn);
  tb__http_pool_complete(req, status);
}

static int transport_new(struct tb__http_conn_s *conn, tb__transport_t **t) {
  tb__http_client_t *c = conn->client;
  if (!conn->origin->tls)
    return tb__transport_tcp_new(c->loop, t);
  if (c->opts_.tls_transport_new == NULL)
    return TB_EUNSUPPORTED; /* send() refuses such requests first */
  return c->opts_.tls_transport_new(c->loop, c->opts_.tls_ctx,
                                    conn->origin->host, t);
}

static void on_connected(tb__transport_t *t, int status);

static int connect_addr(struct tb__http_conn_s *conn,
                        const struct sockaddr *sa) {
  tb__http_client_t *c = conn->client;
  tb__transport_t *t;
  int rc = transport_new(conn, &t);
  if (rc != 0)
    return rc;
  c->n_transports_++;
  t->data = conn;
  rc = tb__transport_connect(t, sa, on_connected);
  if (rc != 0) {
    close_transport(c, t);
    return rc;
  }
  conn->t = t;
  return 0;
}

static int connect_error(int err) {
  return err == UV_ETIMEDOUT ? TB_ECONNECT_TIMEOUT : err;
}

/* Tries the next resolved address; fails the request when none is left.
 * Runs only in loop callbacks, so the request may complete here. */
static void connect_next(struct tb__http_conn_s *conn) {
  while (conn->ai_next != NULL) {
    struct addrinfo *ai = conn->ai_next;
    conn->ai_next = ai->ai_next;
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
      continue;
    int rc = connect_addr(conn, ai->ai_addr);
    if (rc == 0)
      return;
    conn->last_err = rc;
  }
  struct tb__http_origin_s *o = conn->origin;
  tb__http_req_set_message(conn->req, "connect to %s port %u: %s", o->host,
                           (unsigned)o->port, tb_strerror(conn->last_err));
  tb__http_conn_fail(conn, connect_error(conn->last_err));
}

static void on_connected(tb__transport_t *t, int status) {
  struct tb__http_conn_s *conn = t->data;
  tb__http_client_t *c = conn->client;
  if (status < 0) {
    close_transport(c, t);
    conn->t = NULL;
    conn->last_err = status;
    connect_next(conn);
    return;
  }
  if (conn->ai != NULL) {
    uv_freeaddrinfo(conn->ai);
    conn->ai = conn->ai_next = NULL;
  }
  c->n_connects++;
  conn->state = TB__CONN_BUSY;
  tb__http_conn_parser_init(conn);
  int rc = tb__transport_read_start(t, tb__http_conn_on_read);
  if (rc != 0) {
    tb__http_req_set_message(conn->req, "read: %s", tb_strerror(rc));
    tb__http_conn_fail(conn, rc);
    return;
  }
  tb__http_conn_send(conn);
}

static void on_resolved(uv_getaddrinfo_t *gai, int status,
                        struct addrinfo *res) {
  struct tb__http_conn_s *conn = gai->data;
  if (conn->dead) {
    if (res != NULL)
      uv_freeaddrinfo(res);
    free_conn(conn);
    return;
  }
  conn->state = TB__CONN_CONNECTING;
  if (status < 0) {
    tb__http_req_set_message(conn->req, "resolve %s: %s", conn->origin->host,
                             tb_strerror(status));
    tb__http_conn_fail(conn, TB_EDNS);
    return;
  }
  conn->ai = conn->ai_next = res;
  conn->last_err = UV_EADDRNOTAVAIL;
  connect_next(conn);
}

/* Opens a new connection for req: resolve (unless the host is an address
 * literal), then connect.  Runs inside dispatch, so failures found here
 * complete the request later. */
static void open_conn(struct tb__http_origin_s *o, tb__http_client_req_t *req) {
  tb__http_client_t *c = o->client;
  struct tb__http_conn_s *conn = calloc(1, sizeof(*conn));
  if (conn == NULL) {
    tb__http_req_set_message(req, "out of memory");
    tb__http_pool_fail_later(req, TB_ENOMEM);
    return;
  }
  conn->origin = o;
  conn->client = c;
  conn->state = TB__CONN_CONNECTING;
  link_insert_head(&o->busy, &conn->link);
  o->n_conns++;
  c->n_conns_++;
  conn->req = req;
  req->conn_ = conn;
  req->state_ = TB__REQ_CONNECTING;
  req->connect_deadline_ =
      req->connect_timeout_ ? uv_now(c->loop) + req->connect_timeout_ : 0;
  arm(c, req->connect_deadline_);

  union {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
  } addr;
  int numeric = o->ipv6 ? uv_ip6_addr(o->host, o->port, &addr.in6) == 0
                        : uv_ip4_addr(o->host, o->port, &addr.in4) == 0;
  int rc;
  if (numeric) {
    rc = connect_addr(conn, &addr.sa);
    if (rc != 0) {
      tb__http_req_set_message(req, "connect to %s port %u: %s", o->host,
                               (unsigned)o->port, tb_strerror(rc));
      tb__http_pool_fail_later(req, connect_error(rc));
    }
    return;
  }
  char port[8];
  snprintf(port, sizeof(port), "%u", (unsigned)o->port);
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  conn->gai.data = conn;
  rc = uv_getaddrinfo(c->loop, &conn->gai, on_resolved, o->host, port,
                      &hints);
  if (rc != 0) {
    tb__http_req_set_message(req, "resolve %s: %s", o->host, tb_strerror(rc));
    tb__http_pool_fail_later(req, TB_EDNS);
    return;
  }
  conn->state = TB__CONN_RESOLVING;
}

/* --------------------------------------------------------- requests */

int tb__http_pool_has_tls(const tb__http_client_t *c) {
  return c->opts_.tls_transport_new != NULL;
}

struct tb__http_origin_s *tb__http_pool_origin(tb__http_client_t *c,
                                               const tb__url_t *url) {
  for (tb__http_link_t *l = c->origins_.next; l != &c->origins_; l = l->next) {
    struct tb__http_origin_s *o = LINK_DATA(l, struct tb__http_origin_s, link);
    if (o->tls == url->tls && o->port == url->port &&
        strlen(o->host) == url->host.len &&
        strncasecmp(o->host, url->host.base, url->host.len) == 0)
      return o;
  }
  struct tb__http_origin_s *o = calloc(1, sizeof(*o));
  if (o == NULL)
    return NULL;
  o->host = tb__strndup(url->host.base, url->host.len);
  if (o->host == NULL) {
    free(o);
    return NULL;
  }
  for (char *p = o->host; *p; p++)
    *p = (char)tolower((unsigned char)*p);
  o->client = c;
  o->port = url->port;
  o->tls = url->tls;
  o->ipv6 = url->ipv6;
  link_init(&o->busy);
  link_init(&o->idle);
  link_init(&o->queue);
  link_insert_tail(&c->origins_, &o->link);
  return o;
}

void tb__http_pool_activate(tb__http_client_t *c, tb__http_client_req_t *req) {
  link_init(&req->queue_link_);
  link_insert_tail(&c->active_, &req->active_link_);
  if (c->n_active_++ == 0)
    update_ref(c);
  arm(c, req->deadline_);
}

void tb__http_pool_enqueue(struct tb__http_origin_s *o,
                           tb__http_client_req_t *req, int front) {
  req->state_ = TB__REQ_QUEUED;
  if (front)
    link_insert_head(&o->queue, &req->queue_link_);
  else
    link_insert_tail(&o->queue, &req->queue_link_);
}

static void assign(struct tb__http_conn_s *conn, tb__http_client_req_t *req) {
  link_remove(&conn->link);
  link_insert_head(&conn->origin->busy, &conn->link);
  conn->state = TB__CONN_BUSY;
  tb__transport_set_ref(conn->t, 1);
  conn->req = req;
  req->conn_ = conn;
  tb__http_conn_send(conn);
}

void tb__http_pool_dispatch(struct tb__http_origin_s *o) {
  tb__http_client_t *c = o->client;
  if (c->closing_ || o->dispatching)
    return;
  o->dispatching = 1;
  while (!link_empty(&o->queue)) {
    tb__http_client_req_t *req =
        LINK_DATA(o->queue.next, tb__http_client_req_t, queue_link_);
    if (req->fresh_only_ && !link_empty(&o->idle)) {
      /* Make room for the fresh connection a retry needs: the oldest
       * idle one is the likeliest to be stale as well. */
      tb__http_pool_discard(
          LINK_DATA(o->idle.prev, struct tb__http_conn_s, link));
    }
    if (!req->fresh_only_ && !link_empty(&o->idle)) {
      link_remove(&req->queue_link_);
      assign(LINK_DATA(o->idle.next, struct tb__http_conn_s, link), req);
    } else if (o->n_conns < c->opts_.max_conns_per_origin) {
      link_remove(&req->queue_link_);
      open_conn(o, req);
    } else {
      break;
    }
  }
  o->dispatching = 0;
}

/* Takes req off whatever holds it: its origin's queue, its connection
 * (which is discarded) or the deferred list. */
static void detach(tb__http_client_req_t *req) {
  link_remove(&req->queue_link_);
  if (req->conn_ != NULL)
    tb__http_pool_discard(req->conn_);
}

void tb__http_pool_complete(tb__http_client_req_t *req, int status) {
  tb__http_client_t *c = req->client_;
  link_remove(&req->queue_link_);
  link_remove(&req->active_link_);
  req->state_ = TB__REQ_IDLE;
  req->connect_deadline_ = 0;
  if (--c->n_active_ == 0)
    update_ref(c);
  tb__http_pool_dispatch(req->origin_);
  if (status == 0)
    req->message[0] = '\0';
  else if (req->message[0] == '\0')
    tb__http_req_set_message(req, "%s", tb_strerror(status));
  req->cb_(req, status);
}

static void on_defer(uv_timer_t *t) {
  tb__http_client_t *c = t->data;
  while (!link_empty(&c->deferred_)) {
    tb__http_client_req_t *req =
        LINK_DATA(c->deferred_.next, tb__http_client_req_t, queue_link_);
    tb__http_pool_complete(req, req->deferred_status_);
  }
  if (c->closing_ && !c->timers_closing_) {
    c->timers_closing_ = 1;
    uv_close((uv_handle_t *)&c->timer_, on_timer_closed);
    uv_close((uv_handle_t *)&c->defer_, on_timer_closed);
  }
}

void tb__http_pool_fail_later(tb__http_client_req_t *req, int status) {
  tb__http_client_t *c = req->client_;
  struct tb__http_origin_s *o = req->origin_;
  detach(req);
  link_remove(&req->active_link_);
  req->state_ = TB__REQ_DEFERRED;
  req->deferred_status_ = status;
  link_insert_tail(&c->deferred_, &req->queue_link_);
  if (!uv_is_active((uv_handle_t *)&c->defer_))
    uv_timer_start(&c->defer_, on_defer, 0, 0);
  tb__http_pool_dispatch(o);
}

void tb__http_pool_retry(struct tb__http_conn_s *conn) {
  tb__http_client_req_t *req = conn->req;
  struct tb__http_origin_s *o = conn->origin;
  tb__http_pool_discard(conn);
  req->retried = 1;
  req->fresh_only_ = 1;
  tb__http_pool_enqueue(o, req, 1);
  tb__http_pool_dispatch(o);
}

/* Fails the first request whose deadline has passed; 0 when none has. */
static int expire_one(tb__http_client_t *c, uint64_t now) {
  for (tb__http_link_t *l = c->active_.next; l != &c->active_; l = l->next) {
    tb__http_client_req_t *req = LINK_DATA(l, tb__http_client_req_t, active_link_);
    int conn_late = req->state_ == TB__REQ_CONNECTING &&
                    req->connect_deadline_ != 0 &&
                    req->connect_deadline_ <= now;
    int late = req->deadline_ != 0 && req->deadline_ <= now;
    if (!conn_late && !late)
      continue;
    if (conn_late && (!late || req->connect_deadline_ <= req->deadline_)) {
      tb__http_req_set_message(req, "connect to %s port %u timed out after "
                               "%llu ms", req->origin_->host,
                               (unsigned)req->origin_->port,
                               (unsigned long long)req->connect_timeout_);
      detach(req);
      tb__http_pool_complete(req, TB_ECONNECT_TIMEOUT);
    } else {
      tb__http_req_set_message(req, "request to %s port %u timed out",
                               req->origin_->host,
                               (unsigned)req->origin_->port);
      detach(req);
      tb__http_pool_complete(req, TB_ETIMEDOUT);
    }
    return 1;
  }
  return 0;
}

static void on_timer(uv_timer_t *t) {
  tb__http_client_t *c = t->data;
  uint64_t now = uv_now(c->loop);
  c->timer_due_ = 0;
  /* One at a time: a callback may cancel, send or close anything. */
  while (!c->closing_ && expire_one(c, now))
    ;
  if (c->closing_)
    return;
  uint64_t next = 0;
  for (tb__http_link_t *l = c->origins_.next; l != &c->origins_; l = l->next) {
    struct tb__http_origin_s *o = LINK_DATA(l, struct tb__http_origin_s, link);
    int evicted = 0;
    tb__http_link_t *k = o->idle.next;
    while (k != &o->idle) {
      struct tb__http_conn_s *conn = LINK_DATA(k, struct tb__http_conn_s,
                                               link);
      k = k->next;
      if (conn->idle_deadline <= now) {
        tb__http_pool_discard(conn);
        evicted = 1;
      } else if (next == 0 || conn->idle_deadline < next) {
        next = conn->idle_deadline;
      }
    }
    if (evicted)
      tb__http_pool_dispatch(o);
  }
  for (tb__http_link_t *l = c->active_.next; l != &c->active_; l = l->next) {
    tb__http_client_req_t *req = LINK_DATA(l, tb__http_client_req_t, active_link_);
    uint64_t d[2] = { req->deadline_, req->state_ == TB__REQ_CONNECTING
                                          ? req->connect_deadline_ : 0 };
    for (int i = 0; i < 2; i++)
      if (d[i] != 0 && (next == 0 || d[i] < next))
        next = d[i];
  }
  arm(c, next);
}

/* ------------------------------------------------------------ client */

int tb__http_client_init(uv_loop_t *loop, tb__http_client_t *c,
                         const tb__http_client_opts_t *opts) {
  if (loop == NULL || c == NULL)
    return TB_EINVAL;
  memset(c, 0, sizeof(*c));
  c->loop = loop;
  if (opts != NULL)
    c->opts_ = *opts;
  if (c->opts_.max_conns_per_origin == 0)
    c->opts_.max_conns_per_origin = DEFAULT_MAX_CONNS;
  if (c->opts_.idle_timeout_ms == 0)
    c->opts_.idle_timeout_ms = DEFAULT_IDLE_MS;
  if (c->opts_.connect_timeout_ms == 0)
    c->opts_.connect_timeout_ms = DEFAULT_CONNECT_MS;
  if (c->opts_.max_body == 0)
    c->opts_.max_body = TB_HTTP_DEFAULT_MAX_BODY;
  const char *ua = c->opts_.user_agent ? c->opts_.user_agent
                                       : "tinkerbell/" TB_VERSION_STRING;
  for (const char *p = ua; *p; p++)
    if (*p == '\r' || *p == '\n')
      return TB_EINVAL;
  c->user_agent_ = tb__strndup(ua, strlen(ua));
  if (c->user_agent_ == NULL)
    return TB_ENOMEM;
  c->opts_.user_agent = c->user_agent_;
  link_init(&c->origins_);
  link_init(&c->active_);
  link_init(&c->deferred_);
  uv_timer_init(loop, &c->timer_);
  uv_timer_init(loop, &c->defer_);
  c->timer_.data = c;
  c->defer_.data = c;
  uv_unref((uv_handle_t *)&c->timer_);
  c->n_handles_ = 2;
  return 0;
}

void tb__http_client_close(tb__http_client_t *c,
                           tb__http_client_close_cb close_cb) {
  if (c->closing_)
    return;
  c->closing_ = 1;
  c->close_cb_ = close_cb;
  while (!link_empty(&c->active_)) {
    tb__http_client_req_t *req =
        LINK_DATA(c->active_.next, tb__http_client_req_t, active_link_);
    tb__http_req_set_message(req, "the HTTP client was closed");
    tb__http_pool_fail_later(req, UV_ECANCELED);
  }
  for (tb__http_link_t *l = c->origins_.next; l != &c->origins_; l = l->next) {
    struct tb__http_origin_s *o = LINK_DATA(l, struct tb__http_origin_s, link);
    while (!link_empty(&o->idle))
      tb__http_pool_discard(LINK_DATA(o->idle.next, struct tb__http_conn_s,
                                      link));
  }
  uv_timer_stop(&c->timer_);
  c->timer_due_ = 0;
  /* The deferred callbacks, then the timers' close, run on the next
   * turn: close never calls back synchronously. */
  uv_timer_start(&c->defer_, on_defer, 0, 0);
}
