/*
 * Fuzz target: the HTTP server's request path, from the bytes a
 * connection reads to the answer it would write, without a socket.
 *
 * Input: one flags byte (bits 0-2: how many split points follow, bit 3: a
 * 1 KiB body limit instead of the default, bit 4: API keys required), that
 * many piece lengths (one byte each, 1 to 256 bytes), then the bytes a
 * client sends.  They reach the request parser (src/http/server_parser.c)
 * in those pieces, as reads would, and each request goes the way
 * server_conn.c takes it: at its head, tb__http_req_fill_head and the
 * server's tb__server_on_head (src/server/server.c: the route in the
 * server's own table of every route of both dialects, 404, 405, 400, the
 * API key and 401); once complete, tb__http_req_fill_body and the server's
 * on_request step (the dialect of a shared path).  Instead of the route's
 * handler, which would start real work, the target reads every parameter
 * and a few query fields and answers with them as JSON.  A parse error is
 * answered as the connection answers it.  Error messages go through the
 * server's path rewriter (a data directory is set).
 *
 * Every answer the server serialises (server_response.c) must be one
 * well-formed HTTP/1.1 response whose Content-Length is its body's, and
 * every JSON body valid JSON (hence valid UTF-8).
 *
 * Not reached: the socket half of server_conn.c (reads, writes, body
 * memory, back-pressure, timers) and the handlers themselves; the wire
 * target decodes the bodies the handlers decode.  The server keeps no
 * request objects between inputs (no read buffer, so none are pooled),
 * and each input gets a fresh parser and connection.
 */
#include "fuzz.h"

#include <string.h>

#include <jansson.h>
#include <llhttp.h>

#include "core/log.h"
#include "http/router.h"
#include "http/server_internal.h"
#include "server/internal.h"
#include "server/routes.h"
#include "server/store.h"
#include "server/tinkerbell.h"
#include "server/training.h"

#define container_of(ptr, type, member) \
  ((type *)((char *)(ptr) - offsetof(type, member)))

/* The route table, built once: registration allocates, matching does not
 * change it.  The API keys too, put in place per input. */
static tb__server_t *srv;
static tb__training_t training;
static tb__auth_t keyed, open_auth;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  tb__log_set_level(TB_LOG_OFF);
  srv = calloc(1, sizeof(*srv));
  if (srv == NULL)
    abort();
  tb__http_router_init(&srv->router);
  srv->opts.data_dir = "/srv/tinkerbell-data";
  srv->unmatched.method = "";
  srv->unmatched.pattern = "";
  training.srv = srv;
  /* Every row of the server's route table, as a server with a data_dir
   * and the training part has them. */
  int rc = tb__routes_add(srv, TB__PART_CORE, NULL);
  rc = rc ? rc : tb__routes_add(srv, TB__PART_STORE, srv);
  rc = rc ? rc : tb__routes_add(srv, TB__PART_TRAINING, &training);
  static const char keys[] = "tml-fuzz-alice alice\ntml-fuzz-bob bob\n";
  char msg[256];
  rc = rc ? rc : tb__auth_init_text(&keyed, keys, sizeof(keys) - 1, 0, 0, msg, sizeof(msg));
  if (rc != 0 || srv->n_routes < 50) {
    fprintf(stderr, "fuzz_http: cannot build the route table (%d)\n", rc);
    abort();
  }
  return 0;
}

/* ------------------------------------------------------------ answers */

typedef struct resp_check_s {
  int status;
  int headers_done;
  int complete;
  int head;           /* the request was HEAD: no body follows */
  size_t body_len;
  uint64_t content_length;
  int has_length;
  char body[8192];    /* the start of the body, for the JSON check */
  size_t kept;
} resp_check_t;

static int rc_on_headers_complete(llhttp_t *ll) {
  resp_check_t *r = ll->data;
  r->status = ll->status_code;
  r->headers_done = 1;
  r->has_length = (ll->flags & F_CONTENT_LENGTH) != 0;
  r->content_length = ll->content_length;
  return r->head ? 1 : 0;  /* 1: this response has no body */
}

static int rc_on_body(llhttp_t *ll, const char *at, size_t len) {
  resp_check_t *r = ll->data;
  size_t room = sizeof(r->body) - r->kept;
  size_t n = len < room ? len : room;
  memcpy(r->body + r->kept, at, n);
  r->kept += n;
  r->body_len += len;
  return 0;
}

static int rc_on_message_complete(llhttp_t *ll) {
  resp_check_t *r = ll->data;
  r->complete++;
  return 0;
}

/* The answer req holds must be one well-formed response. */
static void check_answer(tb__http_request_t *req, int status) {
  static const llhttp_settings_t settings = {
    .on_headers_complete = rc_on_headers_complete,
    .on_body = rc_on_body,
    .on_message_complete = rc_on_message_complete,
  };
  FUZZ_CHECK(req->state == TB__REQ_RESPONDED, "state %d", (int)req->state);
  FUZZ_CHECK(req->out.len > 0, "no answer was serialised");
  resp_check_t r;
  memset(&r, 0, sizeof(r));
  r.head = tb__slice_eq_str(req->method, "HEAD");
  llhttp_t ll;
  llhttp_init(&ll, HTTP_RESPONSE, &settings);
  ll.data = &r;
  llhttp_errno_t e = llhttp_execute(&ll, req->out.base, req->out.len);
  for (size_t i = 0; e == HPE_OK && i < req->n_body_iov; i++)
    e = llhttp_execute(&ll, req->body_iov[i].base, req->body_iov[i].len);
  FUZZ_CHECK(e == HPE_OK, "answer %d does not parse: %s (%s)", status,
             llhttp_errno_name(e), llhttp_get_error_reason(&ll));
  FUZZ_CHECK(r.complete == 1, "answer %d holds %d responses", status, r.complete);
  FUZZ_CHECK(r.status == status, "status line says %d, answered %d", r.status,
             status);
  /* A body shorter than its Content-Length leaves the message incomplete,
   * a longer one starts a second response: both fail above. */
  if (status >= 200 && status != 204 && status != 304)
    FUZZ_CHECK(r.has_length, "answer %d has no Content-Length", status);
  if (!r.head && r.body_len > 0 && r.body_len <= sizeof(r.body)) {
    json_error_t je;
    json_t *v = json_loadb(r.body, r.body_len, 0, &je);
    FUZZ_CHECK(v != NULL, "answer %d: the body is not valid JSON: %s: %.*s", status,
               je.text, (int)r.body_len, r.body);
    json_decref(v);
  }
}

/* ------------------------------------------------------------ requests */

/* A complete request that passed tb__server_on_head: the server's
 * on_request step, then a stand-in for the route's handler. */
static void handle(tb__http_request_t *req) {
  tb__sreq_t *sr = tb__sreq(req);
  FUZZ_CHECK(sr != NULL && sr->route != NULL, "a request reached its handler without a route");
  tb__route_t *rt = sr->route;
  int rc;
  json_t *out = json_object();
  if (out == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    return;
  }
  json_object_set_new(out, "route", json_string(rt->pattern));
  tb_slice_t key;
  if (tb__auth_request_key(req, &key)) {
    FUZZ_CHECK(key.len > 0 && key.base >= req->msg.head.base &&
                   key.base + key.len <= req->msg.head.base + req->msg.head.len,
               "the API key is not inside the request head");
    json_object_set_new(out, "key_bytes", json_integer((json_int_t)key.len));
  }
  if (rt->dialect == TB__DIALECT_BOTH)
    json_object_set_new(out, "tinkerbell",
                        json_boolean(tb__dialect_of(req) == TB__DIALECT_TINKERBELL));
  for (size_t i = 0; i < req->n_params; i++) {
    char name[64];
    snprintf(name, sizeof(name), "%.*s", (int)req->params[i].name.len,
             req->params[i].name.base);
    const tb_slice_t *v = tb__http_request_param(req, name);
    FUZZ_CHECK(v != NULL && v->base[v->len] == '\0', "parameter %s", name);
    /* NULL (not added) when the value is not UTF-8: a handler's concern. */
    json_object_set_new(out, name, json_stringn(v->base, v->len));
  }
  static const char *const query[] = { "limit", "offset", "access_scope", "project_id" };
  for (size_t i = 0; i < sizeof(query) / sizeof(query[0]); i++) {
    tb_slice_t v;
    rc = tb__http_request_query(req, query[i], &v);
    if (rc == 1) {
      FUZZ_CHECK(v.base[v.len] == '\0', "query %s", query[i]);
      json_object_set_new(out, query[i], json_stringn(v.base, v.len));
    } else {
      FUZZ_CHECK(rc == 0 || rc == TB_EINVAL, "query %s: %d", query[i], rc);
    }
  }
  json_object_set_new(out, "body_bytes", json_integer((json_int_t)req->body.len));
  tb__server_respond_jsonv(req, 200, out);
  json_decref(out);
}

/* One connection's worth of parsing.  The connection struct holds the
 * queue of requests, as server_conn.c keeps it; in_process stays set, so
 * answers are kept for the harness rather than flushed to a socket. */
typedef struct conn_s {
  tb__http_server_conn_t conn;
  int stop;  /* Connection: close, upgrade, an answer at the head, an error */
} conn_t;

static tb__http_msg_t *on_begin(tb__http_parser_t *p) {
  conn_t *c = p->data;
  tb__http_request_t *req = tb__http_req_get(&srv->http);
  if (req == NULL)
    return NULL;
  req->conn = &c->conn;
  req->state = TB__REQ_PARSING;
  req->prev = c->conn.tail;
  if (c->conn.tail)
    c->conn.tail->next = req;
  else
    c->conn.head = req;
  c->conn.tail = req;
  c->conn.n_queued++;
  return &req->msg;
}

/* The head, as server_conn.c's conn_head takes it (without the body
 * memory and the timers): the request's view, then the server's verdict. */
static int on_head(tb__http_parser_t *p, tb__http_msg_t *m) {
  tb__http_request_t *req = container_of(m, tb__http_request_t, msg);
  int body_follows = m->content_length > 0 || m->chunked;
  req->keep_alive = m->keep_alive && !m->upgrade && !body_follows;
  if (tb__http_req_fill_head(req) != 0) {
    tb__http_respond_error(req, 503, "out of memory");
    return TB__HTTP_HEAD_ANSWERED;
  }
  FUZZ_CHECK(req->head_seen, "the head was filled without head_seen");
  tb__server_on_head(req);
  if (req->state != TB__REQ_PARSING)
    return TB__HTTP_HEAD_ANSWERED;
  req->keep_alive = 0;  /* decided again when the request is complete */
  return 0;
}

static const tb__http_parser_cbs_t cbs = { on_begin, on_head, NULL };

/* What a write would do: the answered requests at the head of the queue,
 * in order, are checked and released. */
static void write_answers(conn_t *c) {
  tb__http_request_t *req;
  while ((req = c->conn.head) != NULL && req->state == TB__REQ_RESPONDED) {
    tb__sreq_t *sr = tb__sreq(req);
    if (sr != NULL && sr->status != 0)
      check_answer(req, sr->status);
    else
      FUZZ_CHECK(req->out.len > 0, "an answer without a status line");
    tb__http_queue_remove(&c->conn, req);
    tb__http_req_finish(req, 0);
  }
}

/* Feeds one piece, looping over the requests it completes as
 * server_conn.c's conn_process does. */
static void feed(conn_t *c, const char *data, size_t len) {
  while (len > 0 && !c->stop) {
    size_t used;
    int rc = tb__http_parser_execute(&c->conn.parser, data, len, &used);
    FUZZ_CHECK(used <= len, "consumed %zu of %zu", used, len);
    data += used;
    len -= used;
    if (rc == TB__HTTP_PARSE_MESSAGE) {
      tb__http_request_t *req =
          container_of(c->conn.parser.completed, tb__http_request_t, msg);
      if (!req->msg.keep_alive || req->msg.upgrade)
        c->stop = 1;
      if (req->state == TB__REQ_PARSING) {  /* not answered at its head */
        tb__http_req_fill_body(req);
        req->state = TB__REQ_HANDLER;
        handle(req);
        FUZZ_CHECK(req->state == TB__REQ_RESPONDED, "a request was not answered");
      }
    } else if (rc == TB__HTTP_PARSE_ANSWERED) {
      /* Answered at the head with a body still to come: nothing more is
       * read. */
      c->conn.parser.msg = NULL;
      c->stop = 1;
    } else if (rc < 0) {
      tb__http_parser_t *p = &c->conn.parser;
      FUZZ_CHECK(p->status >= 400 && p->status <= 599 && p->reason != NULL,
                 "parse error without a status (%d)", p->status);
      c->stop = 1;
      if (p->msg != NULL) {
        /* The connection answers the error with the request it was filling. */
        tb__http_request_t *req = container_of(p->msg, tb__http_request_t, msg);
        p->msg = NULL;
        if (req->state != TB__REQ_RESPONDED) {  /* else answered at its head */
          req->keep_alive = 0;
          req->continue_state = 0;
          tb__http_respond_error(req, p->status, p->reason);
          FUZZ_CHECK(req->state == TB__REQ_RESPONDED, "the error was not answered");
          check_answer(req, p->status);
        }
      }
    } else if (used == 0) {
      break;
    }
    write_answers(c);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in_t in = { data, size };
  uint8_t flags = fuzz_byte(&in);
  size_t n_cuts = flags & 7;
  size_t piece[8];
  for (size_t i = 0; i < n_cuts; i++)
    piece[i] = (size_t)fuzz_byte(&in) + 1;

  conn_t *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return 0;
  memset(&srv->http, 0, sizeof(srv->http));
  srv->http.opts.max_body = flags & 8 ? 1024 : TB_HTTP_DEFAULT_MAX_BODY;
  srv->http.opts.max_pipeline = 32;
  srv->http.opts.on_head = tb__server_on_head;
  srv->auth = flags & 16 ? keyed : open_auth;
  c->conn.server = &srv->http;
  c->conn.in_process = 1;
  tb__http_parser_init(&c->conn.parser, &cbs, srv->http.opts.max_body);
  c->conn.parser.data = c;

  const char *p = (const char *)in.p;
  size_t left = in.n;
  for (size_t i = 0; i < n_cuts && left > 0; i++) {
    size_t n = piece[i] < left ? piece[i] : left;
    feed(c, p, n);
    p += n;
    left -= n;
  }
  feed(c, p, left);
  write_answers(c);
  /* The client went away: what is left (a request still arriving, an
   * error answer) is released. */
  tb__http_request_t *req;
  while ((req = c->conn.head) != NULL) {
    tb__http_queue_remove(&c->conn, req);
    if (req->state == TB__REQ_RESPONDED)
      tb__http_req_finish(req, TB_ECLOSED);
    else
      tb__http_req_put(req);
  }
  free(c);
  return 0;
}
