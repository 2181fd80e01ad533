/*
 * The server's request-parsing glue over llhttp: bytes go in as they arrive
 * from the socket, in pieces of any size, and complete requests come out.
 *
 * llhttp hands out spans that point into the caller's read buffer and may
 * be split across reads, so the glue copies the URL, header names and
 * values back to back into one growable buffer per message (msg->head) and
 * records offsets; slices are made only once the head is complete, when
 * the buffer no longer moves.  The body goes to a second buffer (msg->body)
 * so that handlers see it contiguous.
 *
 * The glue enforces the limits that have their own status codes (414 URL,
 * 431 header block or header count, 413 body) and turns every other llhttp
 * error into 400.  An error is sticky, as in llhttp: the connection ends.
 *
 * Non-goals: responses (the HTTP client has its own parser), upgrades
 * (an upgrade request is parsed and answered, then the connection closes),
 * trailers (parsed and dropped).
 */
#ifndef TB_HTTP_SERVER_PARSER_H
#define TB_HTTP_SERVER_PARSER_H

#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#include "core/buf.h"
#include "http/http.h"

/* Where one header sits in msg->head. */
typedef struct tb__http_hdr_span_s {
  size_t name_off, name_len;
  size_t value_off, value_len;
} tb__http_hdr_span_t;

/* One request as the glue builds it.  The owner allocates it (the begin
 * callback) and reuses it: tb__http_msg_clear keeps the buffers' memory. */
typedef struct tb__http_msg_s {
  tb__buf_t head;            /* URL, then each header name and value */
  tb__buf_t body;
  size_t url_len;           /* the URL is head.base[0 .. url_len) */
  size_t n_headers;
  size_t header_bytes;      /* counted against TB_HTTP_MAX_HEADER_BYTES */
  uint64_t content_length;  /* valid when has_content_length */
  uint8_t method;           /* llhttp_method_t */
  uint8_t http_major, http_minor;
  unsigned keep_alive : 1;
  unsigned expect_continue : 1;  /* "Expect: 100-continue" was sent */
  unsigned has_content_length : 1;
  unsigned chunked : 1;
  unsigned upgrade : 1;          /* Upgrade or CONNECT: close after it */
  unsigned head_complete : 1;
  unsigned complete : 1;
  tb__http_hdr_span_t hdr[TB_HTTP_MAX_HEADERS];
} tb__http_msg_t;

void tb__http_msg_init(tb__http_msg_t *m);
/* Empties the message for reuse; buffers larger than keep_cap bytes are
 * released so that one large upload does not pin memory forever. */
void tb__http_msg_clear(tb__http_msg_t *m, size_t keep_cap);
void tb__http_msg_free(tb__http_msg_t *m);

static inline tb_slice_t tb__http_msg_url(const tb__http_msg_t *m) {
  tb_slice_t s = { m->head.base, m->url_len };
  return s;
}
/* Fills out[0 .. n_headers) with slices into m->head; only valid once the
 * head is complete. */
void tb__http_msg_headers(const tb__http_msg_t *m, tb__http_header_t *out);

typedef struct tb__http_parser_s tb__http_parser_t;

typedef struct tb__http_parser_cbs_s {
  /* A new request starts: return an empty message to fill, or NULL when
   * out of memory (the parser then fails with status 503). */
  tb__http_msg_t *(*begin)(tb__http_parser_t *p);
  /* The head is complete and within limits; the body (if any) follows.
   * This is where "100 Continue" is decided.  Returns 0 to go on, or
   * TB__HTTP_HEAD_ANSWERED when the owner answered the request already:
   * a body still to come is then not read, and execute returns
   * TB__HTTP_PARSE_ANSWERED.  Optional. */
  int (*head)(tb__http_parser_t *p, tb__http_msg_t *m);
  /* len more body bytes arrived (before they are kept): 0, or an HTTP
   * status to fail the request with (503 when bodies hold too much
   * memory).  Optional. */
  int (*body)(tb__http_parser_t *p, tb__http_msg_t *m, size_t len);
} tb__http_parser_cbs_t;

#define TB__HTTP_HEAD_ANSWERED 1

struct tb__http_parser_s {
  /* public */
  void *data;
  /* read-only */
  tb__http_msg_t *msg;        /* the message being filled, NULL between */
  tb__http_msg_t *completed;  /* set when execute returns MESSAGE */
  int status;                 /* after an error: 400, 413, 414, 431, 503 */
  const char *reason;         /* after an error: a short static text */
  /* private */
  llhttp_t ll;
  const tb__http_parser_cbs_t *cbs;
  size_t max_body;
  size_t span_start;
  int in_trailers;
  int answered;               /* stopped after an answer at the head */
};

/* max_body 0 means TB_HTTP_DEFAULT_MAX_BODY. */
void tb__http_parser_init(tb__http_parser_t *p, const tb__http_parser_cbs_t *cbs,
                          size_t max_body);

enum {
  TB__HTTP_PARSE_MORE = 0,     /* everything consumed, no message ended */
  TB__HTTP_PARSE_MESSAGE = 1,  /* p->completed is done; call again with the
                                  bytes after *consumed */
  TB__HTTP_PARSE_ANSWERED = 2, /* the head callback answered p->msg, whose
                                  body is not read: parsing is over */
};

/* Feeds bytes.  Returns MORE, MESSAGE, ANSWERED, or TB_EPROTO with
 * p->status and p->reason set (then *consumed says where parsing stopped,
 * and every later call fails the same way). */
int tb__http_parser_execute(tb__http_parser_t *p, const char *data, size_t len,
                            size_t *consumed);

/* 1 while a request has started but not completed. */
static inline int tb__http_parser_in_message(const tb__http_parser_t *p) {
  return p->msg != NULL;
}

#endif /* TB_HTTP_SERVER_PARSER_H */
