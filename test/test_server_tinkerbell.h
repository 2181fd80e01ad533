/*
 * What the Tinkerbell dialect's tests share (test_server_tinkerbell.c,
 * test_server_tinkerbell_data.c): its calls over loopback answered as JSON,
 * its futures submitted and retrieved, and its request bodies.
 */
#ifndef TB_TEST_SERVER_TINKERBELL_H
#define TB_TEST_SERVER_TINKERBELL_H

#include "test_server_training.h"

#define HELLO                                                                   \
  "[[{\"role\":\"user\",\"content\":\"Hello!\"},{\"role\":\"assistant\",\"content\":" \
  "\"Hi there!\"}]]"

static inline json_t *post_ok(const char *path, const char *extra, const char *body) {
  return post_json(path, extra, body, 200);
}

static inline const char *str_of(json_t *v, const char *key) {
  const char *s = json_string_value(json_object_get(v, key));
  if (s == NULL)
    fprintf(stderr, "no string %s in %s\n", key, json_dumps(v, 0));
  ASSERT(s != NULL);
  return s;
}

static inline double num_of(json_t *v, const char *key) {
  json_t *n = json_object_get(v, key);
  if (!json_is_number(n))
    fprintf(stderr, "no number %s in %s\n", key, json_dumps(v, 0));
  ASSERT(json_is_number(n));
  return json_number_value(n);
}

/* An async call: {"request_id", "model_id"} at once; the request id. */
static inline char *submit(const char *path, const char *extra, const char *body,
                    const char *want_model) {
  json_t *v = post_ok(path, extra, body);
  char *rid = xstrdup(str_of(v, "request_id"));
  if (want_model != NULL)
    ASSERT_STR_EQ(str_of(v, "model_id"), want_model);
  ASSERT_EQ_INT(json_object_size(v), 2);
  json_decref(v);
  return rid;
}

/* Polls POST /retrieve_future until the job finished; expects status. */
static inline json_t *retrieve_status(const char *rid, const char *extra, int status) {
  char body[128];
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\"}", rid);
  for (;;) {
    hc_t *c = hc_do("POST", "/retrieve_future", extra, body);
    if (c->status == 202) {
      ASSERT_STR_EQ(c->body, "{\"status\":\"pending\"}");
      hc_free(c);
      wait_ms(5);
      continue;
    }
    if (c->status != status)
      fprintf(stderr, "retrieve %s -> %d %s\n", rid, c->status, c->body);
    ASSERT_EQ_INT(c->status, status);
    json_t *v = answer_json(c);
    hc_free(c);
    return v;
  }
}

static inline json_t *retrieve(const char *rid, const char *extra) {
  return retrieve_status(rid, extra, 200);
}

static inline char *fb_body(const char *mid, const char *data) {
  char *b = xmalloc(strlen(data) + 256);
  sprintf(b, "{\"model_id\":\"%s\",\"data\":%s,\"loss_fn\":\"cross_entropy\"}", mid, data);
  return b;
}

static inline char *optim_body(const char *mid, double lr) {
  char *b = xmalloc(256);
  sprintf(b, "{\"model_id\":\"%s\",\"adam_params\":{\"learning_rate\":%g}}", mid, lr);
  return b;
}

/* The checks every forward_backward result passes; returns its loss. */
static inline double check_fb(json_t *v, const char *mid, double num_tokens) {
  ASSERT_STR_EQ(str_of(v, "model_id"), mid);
  ASSERT_STR_EQ(str_of(v, "backend"), "tinkerbell-cpu");
  ASSERT_STR_EQ(str_of(v, "loss_fn"), "cross_entropy");
  ASSERT_EQ_INT((int)num_of(v, "num_samples"), 1);
  ASSERT_NEAR(num_of(v, "num_tokens"), num_tokens, 0, 0);
  ASSERT_NEAR(num_of(v, "total_weight"), num_tokens, 0, 0);
  double loss = num_of(v, "loss");
  ASSERT_GT(loss, 0);
  /* The mean cross-entropy per trained token. */
  ASSERT_NEAR(loss, num_of(v, "loss_sum") / num_tokens, 1e-9, 1e-6);
  ASSERT(json_is_object(json_object_get(v, "metrics")));
  return loss;
}

#endif
