/*
 * The server's answers, byte for byte: a fixed script of requests over
 * every route (both dialects, the REST routes, the service routes and
 * the main error answers) against an embedded server on the built-in
 * `base` model with fixed seeds.  Each answer's status, the headers that
 * matter and its body are written to a transcript, with what cannot
 * repeat (ids, times, durations, paths of the temporary data directory)
 * replaced by placeholders, and compared with the file recorded under
 * test/golden/ (one per test).  A change of any wire byte fails here,
 * with one allowance: real numbers are compared to 1e-4 relative, as the
 * arithmetic rounds differently in the last digits from one build to
 * another (debug, sanitizer, other kernels); and a protobuf answer is
 * recorded as its length and its contents decoded by the wire codec, so
 * that its floats are compared as numbers too.
 *
 * To record the files again (after a deliberate change of the wire, to
 * be reviewed in the diff):  TB_GOLDEN_RECORD=1 meson test -C build
 * server_golden   (or run build/test/test_server_golden with
 * TB_GOLDEN_DIR=test/golden TB_GOLDEN_RECORD=1).
 *
 * Not here: what each answer means (the other server tests check that),
 * timing (futures are awaited until done, never recorded while pending
 * except where the script holds them pending on purpose).
 */
#include "test_server_training.h"

#include <math.h>
#include <regex.h>

/* ------------------------------------------------------------ normalizing */

/* Ids seen so far, numbered in the order of first appearance, so that
 * the same id is the same placeholder throughout a transcript. */
typedef struct {
  char *ids[256];
  size_t n_ids;
  tb__buf_t out;           /* the transcript */
} golden_t;

static golden_t G;

static size_t id_index(const char *s, size_t n) {
  for (size_t i = 0; i < G.n_ids; i++)
    if (strlen(G.ids[i]) == n && memcmp(G.ids[i], s, n) == 0)
      return i + 1;
  ASSERT_LT(G.n_ids, sizeof(G.ids) / sizeof(G.ids[0]));
  G.ids[G.n_ids] = xmalloc(n + 1);
  memcpy(G.ids[G.n_ids], s, n);
  G.ids[G.n_ids][n] = '\0';
  return ++G.n_ids;
}

/* One rewrite: every match of re becomes what fmt makes of it. */
typedef enum { R_ID, R_CONST, R_KEEP_PREFIX } rule_kind_t;

typedef struct {
  const char *re;
  rule_kind_t kind;
  const char *text;       /* R_CONST: the placeholder; R_KEEP_PREFIX: too */
} rule_t;

static const rule_t rules[] = {
  /* The data directory of the run (mkdtemp). */
  { "/tmp/tb-train-[A-Za-z0-9]{6}", R_CONST, "<data_dir>" },
  /* Server ids: a prefix and 32 hex digits (server/idgen.h). */
  { "[a-z]+-[0-9a-f]{32}", R_ID, NULL },
  /* Times: ISO 8601 and HTTP dates. */
  { "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}"
    "(\\.[0-9]+)?(Z|[+-][0-9]{2}:?[0-9]{2})?",
    R_CONST, "<time>" },
  /* JSON numbers that are clocks or durations. */
  { "\"(created_at|last_request_time|last_heartbeat|expires|expires_at|expiration_time|"
    "time|timestamp|duration|duration_ms|elapsed|elapsed_ms|uptime|uptime_s|queue_ms|"
    "run_ms|wall_ms|compute_ms|server_ms|started_at|finished_at|updated_at|"
    "last_checkpoint_time|seconds)\":[-0-9.eE+]+",
    R_KEEP_PREFIX, "<n>" },
  /* Prometheus samples of durations and clocks, and the bytes results
   * hold (their real numbers' text is as long as their digits). */
  { "(_seconds(_sum|_total|_bucket)?|_ms(_sum|_bucket)?|_timestamp|uptime[a-z_]*|"
    "_result_bytes)"
    "(\\{[^}]*\\})? [-0-9.eE+]+",
    R_KEEP_PREFIX, "<n>" },
};

typedef struct {
  regex_t re;
  int ready;
} compiled_t;

static compiled_t compiled[sizeof(rules) / sizeof(rules[0])];

static void compile_rules(void) {
  for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
    if (compiled[i].ready)
      continue;
    ASSERT_OK(regcomp(&compiled[i].re, rules[i].re, REG_EXTENDED));
    compiled[i].ready = 1;
  }
}

/* s (NUL-terminated) with rule i applied everywhere; malloc'd. */
static char *apply(size_t i, const char *s) {
  tb__buf_t b = { 0 };
  const char *p = s;
  regmatch_t m[1];
  while (*p != '\0' && regexec(&compiled[i].re, p, 1, m, p == s ? 0 : REG_NOTBOL) == 0) {
    if (m[0].rm_eo == 0) {
      ASSERT_OK(tb__buf_append(&b, p, 1));
      p++;
      continue;
    }
    ASSERT_OK(tb__buf_append(&b, p, (size_t)m[0].rm_so));
    const char *hit = p + m[0].rm_so;
    size_t n = (size_t)(m[0].rm_eo - m[0].rm_so);
    switch (rules[i].kind) {
    case R_ID: {
      const char *dash = memchr(hit, '-', n);
      ASSERT_OK(tb__buf_printf(&b, "<%.*s#%zu>", (int)(dash - hit), hit, id_index(hit, n)));
      break;
    }
    case R_CONST:
      ASSERT_OK(tb__buf_printf(&b, "%s", rules[i].text));
      break;
    case R_KEEP_PREFIX: {
      /* Keeps what comes before the number (the key or the sample name). */
      size_t k = n;
      while (k > 0 && strchr("-0123456789.eE+", hit[k - 1]) != NULL)
        k--;
      ASSERT_OK(tb__buf_append(&b, hit, k));
      ASSERT_OK(tb__buf_printf(&b, "%s", rules[i].text));
      break;
    }
    }
    p = hit + n;
  }
  ASSERT_OK(tb__buf_printf(&b, "%s", p));
  ASSERT_OK(tb__buf_append(&b, "", 1));
  return b.base;
}

static char *normalize(const char *s) {
  compile_rules();
  char *cur = xstrdup(s);
  for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
    char *next = apply(i, cur);
    free(cur);
    cur = next;
  }
  return cur;
}

/* Whether the body is text to record as is (else: hex). */
static int is_text(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == 0 || (ch < 0x20 && ch != '\n' && ch != '\r' && ch != '\t'))
      return 0;
  }
  return 1;
}

/* A body: text as it is; anything else (protobuf) escaped, byte by byte,
 * on one line, so that the ids in it are normalized all the same. */
static void put_bytes(const char *s, size_t n) {
  tb__buf_t b = { 0 };
  int text = is_text(s, n);
  if (!text)
    ASSERT_OK(tb__buf_printf(&b, "(%zu bytes) ", n));
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (text || (ch >= 0x20 && ch < 0x7f && ch != '\\'))
      ASSERT_OK(tb__buf_append(&b, &s[i], 1));
    else
      ASSERT_OK(tb__buf_printf(&b, "\\x%02x", ch));
  }
  ASSERT_OK(tb__buf_append(&b, "", 1));
  char *norm = normalize(b.base);
  ASSERT_OK(tb__buf_printf(&G.out, "%s\n", norm));
  free(norm);
  tb__buf_free(&b);
}

/* The headers that carry meaning; Date, Content-Length (the body is
 * recorded whole) and Connection do not. */
static const char *const kept_headers[] = {
  "Content-Type", "Retry-After", "WWW-Authenticate", "Allow", "Location",
  "Cache-Control", "Content-Disposition", "Content-Encoding", "X-Request-Id",
};

static void put_head(const char *head) {
  const char *line = strstr(head, "\r\n");
  while (line != NULL && line[2] != '\r' && line[2] != '\0') {
    line += 2;
    const char *end = strstr(line, "\r\n");
    ASSERT(end != NULL);
    const char *colon = memchr(line, ':', (size_t)(end - line));
    if (colon != NULL)
      for (size_t i = 0; i < sizeof(kept_headers) / sizeof(kept_headers[0]); i++)
        if (strlen(kept_headers[i]) == (size_t)(colon - line) &&
            strncasecmp(kept_headers[i], line, (size_t)(colon - line)) == 0) {
          char *h = xmalloc((size_t)(end - line) + 1);
          memcpy(h, line, (size_t)(end - line));
          h[end - line] = '\0';
          char *norm = normalize(h);
          ASSERT_OK(tb__buf_printf(&G.out, "%s\n", norm));
          free(norm);
          free(h);
        }
    line = end;
  }
}

static void put_request(const char *method, const char *path, const char *extra,
                        const void *body, size_t n) {
  char *p = normalize(path);
  ASSERT_OK(tb__buf_printf(&G.out, ">>> %s %s\n", method, p));
  free(p);
  if (extra != NULL && extra[0] != '\0') {
    char *e = normalize(extra);
    ASSERT_OK(tb__buf_printf(&G.out, "%s", e));
    free(e);
  }
  if (body != NULL)
    put_bytes(body, n);
}

/* What a protobuf answer is, for the transcript: its length and its
 * contents decoded by the wire codec and written as JSON, so that its
 * float values are compared as numbers (see golden_check). */
typedef enum { PB_NONE = 0, PB_FWDBWD, PB_SAMPLE } pb_kind_t;

static void put_proto(pb_kind_t kind, const char *body, size_t n) {
  tb_error_t err = { 0 };
  tb__jctx_t jc;
  tb__jctx_init(&jc, &err);
  tb__arena_t arena;
  tb__arena_init(&arena, 0);
  tb_slice_t b = { body, n };
  json_t *v = NULL;
  if (kind == PB_FWDBWD) {
    tb__wire_fwdbwd_output_t o;
    ASSERT_OK(tb__wire_fwdbwd_output_from_proto(&jc, &arena, b, &o));
    v = tb__wire_fwdbwd_output_to_json(&o);
  } else {
    tb__wire_sample_response_t r;
    ASSERT_OK(tb__wire_sample_response_from_proto(&jc, &arena, b, &r));
    v = tb__wire_sample_response_to_json(&r);
  }
  ASSERT(v != NULL);
  char *text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
  ASSERT(text != NULL);
  ASSERT_OK(tb__buf_printf(&G.out, "(%zu bytes of protobuf) %s\n", n, text));
  free(text);
  json_decref(v);
  tb__arena_free(&arena);
}

static void put_answer_as(const hc_t *c, pb_kind_t kind) {
  ASSERT_OK(tb__buf_printf(&G.out, "<<< %d\n", c->status));
  put_head(c->head);
  if (kind != PB_NONE && strcasestr(c->head, "\r\nContent-Type: application/x-protobuf"))
    put_proto(kind, c->body, c->body_len);
  else
    put_bytes(c->body, c->body_len);
  ASSERT_OK(tb__buf_printf(&G.out, "\n"));
}

static void put_answer(const hc_t *c) {
  put_answer_as(c, PB_NONE);
}

/* ------------------------------------------------------------ steps */

/* One request, recorded; the caller frees the answer. */
static hc_t *step(const char *method, const char *path, const char *extra, const char *body) {
  put_request(method, path, extra, body, body ? strlen(body) : 0);
  hc_t *c = hc_do(method, path, extra, body);
  put_answer(c);
  return c;
}

static void stepf(const char *method, const char *path, const char *extra, const char *body,
                  int want) {
  hc_t *c = step(method, path, extra, body);
  if (c->status != want)
    fprintf(stderr, "%s %s -> %d (want %d) %s\n", method, path, c->status, want, c->body);
  ASSERT_EQ_INT(c->status, want);
  hc_free(c);
}

static hc_t *step_raw(const char *path, const char *headers, const void *body, size_t n) {
  put_request("POST", path, headers, body, n);
  hc_t *c = hc_do_raw(path, headers, body, n);
  put_answer(c);
  return c;
}

/* A string field of a recorded 200 answer; malloc'd. */
static char *step_field(const char *method, const char *path, const char *extra,
                        const char *body, const char *key) {
  hc_t *c = step(method, path, extra, body);
  if (c->status != 200)
    fprintf(stderr, "%s %s -> %d %s\n", method, path, c->status, c->body);
  ASSERT_EQ_INT(c->status, 200);
  char *r = field_of(c, key);
  hc_free(c);
  return r;
}

/* Runs the loop until u's future rid finished, so that how often it is
 * polled (which /metrics counts) does not depend on timing. */
static void wait_done(const char *rid, tb__user_t *u) {
  tb_slice_t id = { rid, strlen(rid) };
  tb__future_t *f = NULL;
  RUN_UNTIL(tb__futures_find(&srv->futures, u ? u : srv->auth.local, id, &f) ==
                TB__LOOKUP_FOUND &&
            f->state != TB__FUTURE_PENDING);
}

/* GET /metrics once the engine is idle (a job that releases a model may
 * still run after its answer), so that its gauges do not depend on
 * timing. */
static void step_metrics(void) {
  tb__server_ext_t *ext = srv->exts;
  ASSERT(ext != NULL);
  tb__training_t *tr = ext->data;
  RUN_UNTIL(tr->engine.active == NULL && tr->engine.running_items == 0);
  stepf("GET", "/metrics", NULL, NULL, 200);
}

/* The Tinker future's final answer, recorded once (the polls that said
 * try_again are not: how many there are is a matter of timing). */
static void await_tinker_as(const char *rid, const char *extra, pb_kind_t kind) {
  char body[128];
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\",\"allow_metadata_only\":false}", rid);
  wait_done(rid, NULL);
  hc_t *c = await_future(rid, extra);
  put_request("POST", "/api/v1/retrieve_future", extra, body, strlen(body));
  put_answer_as(c, kind);
  hc_free(c);
}

static void await_tinker(const char *rid, const char *extra) {
  await_tinker_as(rid, extra, PB_NONE);
}

/* A Tinker submission awaited: the submit's answer and the result. */
static void tinker_op(const char *path, const char *body) {
  char *rid = step_field("POST", path, NULL, body, "request_id");
  await_tinker(rid, NULL);
  free(rid);
}

/* The Tinkerbell future's final answer (/retrieve_future), once done. */
static void await_tinkerbell(const char *rid, int want) {
  char body[128];
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\"}", rid);
  wait_done(rid, NULL);
  hc_t *c = hc_do("POST", "/retrieve_future", NULL, body);
  put_request("POST", "/retrieve_future", NULL, body, strlen(body));
  put_answer(c);
  ASSERT_EQ_INT(c->status, want);
  hc_free(c);
}

static void tinkerbell_async(const char *path, const char *body, int want) {
  char *rid = step_field("POST", path, NULL, body, "request_id");
  await_tinkerbell(rid, want);
  free(rid);
}

/* Real numbers (with a fraction or an exponent) of a transcript: the
 * arithmetic may round differently in the last digits from one build to
 * another (a debug or sanitizer build, another kernel), so they are
 * compared as numbers, to 1e-4 relative, and all else byte for byte. */
static const char real_re[] =
    "-?[0-9]+\\.[0-9]+([eE][-+]?[0-9]+)?|-?[0-9]+[eE][-+]?[0-9]+";

/* Whether two transcripts are the same but for such rounding; *at is
 * where they first differ (in want). */
static int same_transcript(const char *want, const char *got, size_t *at) {
  regex_t re;
  ASSERT_OK(regcomp(&re, real_re, REG_EXTENDED));
  const char *w = want, *g = got;
  int same = 1;
  for (;;) {
    regmatch_t mw, mg;
    int hw = regexec(&re, w, 1, &mw, w == want ? 0 : REG_NOTBOL) == 0;
    int hg = regexec(&re, g, 1, &mg, g == got ? 0 : REG_NOTBOL) == 0;
    size_t lw = hw ? (size_t)mw.rm_so : strlen(w), lg = hg ? (size_t)mg.rm_so : strlen(g);
    if (hw != hg || lw != lg || memcmp(w, g, lw) != 0) {
      same = 0;
      break;
    }
    if (!hw)
      break;
    double a = strtod(w + mw.rm_so, NULL), b = strtod(g + mg.rm_so, NULL);
    if (fabs(a - b) > 1e-4 * fmax(fabs(a), fabs(b)) + 1e-6) {
      same = 0;
      break;
    }
    w += mw.rm_eo;
    g += mg.rm_eo;
  }
  *at = (size_t)(w - want);
  regfree(&re);
  return same;
}

/* Compares the transcript with test/golden/<name>.txt, or writes it
 * there with TB_GOLDEN_RECORD=1. */
static void golden_check(const char *name) {
  const char *dir = getenv("TB_GOLDEN_DIR");
  if (dir == NULL)
    dir = "golden";
  char path[1024];
  snprintf(path, sizeof(path), "%s/%s.txt", dir, name);
  const char *rec = getenv("TB_GOLDEN_RECORD");
  if (rec != NULL && strcmp(rec, "1") == 0) {
    FILE *f = fopen(path, "wb");
    ASSERT(f != NULL);
    ASSERT_EQ_INT(fwrite(G.out.base, 1, G.out.len, f), G.out.len);
    ASSERT_OK(fclose(f));
    fprintf(stderr, "recorded %s (%zu bytes)\n", path, G.out.len);
  } else {
    FILE *f = fopen(path, "rb");
    if (f == NULL)
      fprintf(stderr, "no golden file %s (record it with TB_GOLDEN_RECORD=1)\n", path);
    ASSERT(f != NULL);
    tb__buf_t want = { 0 };
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
      ASSERT_OK(tb__buf_append(&want, chunk, n));
    fclose(f);
    ASSERT_OK(tb__buf_append(&want, "", 1));
    ASSERT_OK(tb__buf_append(&G.out, "", 1));
    size_t at = 0;
    int same = same_transcript(want.base, G.out.base, &at);
    if (!same) {
      /* Where it first differs, from the start of that line. */
      size_t bol = at, line = 1;
      while (bol > 0 && want.base[bol - 1] != '\n')
        bol--;
      for (size_t i = 0; i < bol; i++)
        line += want.base[i] == '\n';
      size_t gl = bol < G.out.len ? G.out.len - 1 - bol : 0;
      fprintf(stderr, "%s: differs at line %zu\n--- recorded:\n%.*s\n--- now:\n%.*s\n", path,
              line, (int)(want.len - 1 - bol < 400 ? want.len - 1 - bol : 400), want.base + bol,
              (int)(gl < 400 ? gl : 400), bol < G.out.len ? G.out.base + bol : "");
      char now[1100];
      snprintf(now, sizeof(now), "%s.now", name);
      FILE *o = fopen(now, "wb");
      if (o != NULL) {
        fwrite(G.out.base, 1, G.out.len - 1, o);
        fclose(o);
        fprintf(stderr, "the whole transcript: %s\n", now);
      }
    }
    ASSERT(same);
    tb__buf_free(&want);
  }
  tb__buf_free(&G.out);
  for (size_t i = 0; i < G.n_ids; i++)
    free(G.ids[i]);
  G.n_ids = 0;
  for (size_t i = 0; i < sizeof(compiled) / sizeof(compiled[0]); i++)
    if (compiled[i].ready) {
      regfree(&compiled[i].re);
      compiled[i].ready = 0;
    }
}

/* ------------------------------------------------------------ scripts */

#define HELLO                                                                   \
  "[[{\"role\":\"user\",\"content\":\"Hello!\"},{\"role\":\"assistant\",\"content\":" \
  "\"Hi there!\"}]]"

/* The service routes and the Tinker dialect: sessions, models, the
 * training ops in JSON and protobuf, weights, sampling, futures. */
TEST(golden_tinker) {
  start_training(NULL);
  stepf("GET", "/", NULL, NULL, 200);
  stepf("GET", "/api/v1/healthz", NULL, NULL, 200);
  stepf("GET", "/healthz", NULL, NULL, 200);
  stepf("POST", "/api/v1/client/config", NULL, "{\"sdk_version\":\"0.25.0\"}", 200);
  stepf("POST", "/api/v1/client/dynamic_config", NULL, "{}", 200);
  stepf("GET", "/api/v1/get_server_capabilities", NULL, NULL, 200);
  stepf("GET", "/get_server_capabilities", NULL, NULL, 200);
  stepf("POST", "/api/v1/telemetry", NULL,
        "{\"events\":[{\"event\":\"GENERIC_EVENT\",\"event_id\":\"e1\",\"event_session_index\":0,"
        "\"severity\":\"INFO\",\"timestamp\":\"2026-12-01T00:00:00Z\",\"event_name\":\"x\","
        "\"event_data\":{}}],\"platform\":\"linux\",\"sdk_version\":\"0.25.0\","
        "\"session_id\":\"s\"}",
        200);

  char *sid = step_field("POST", "/api/v1/create_session", NULL,
                         "{\"tags\":[\"golden\"],\"user_metadata\":{\"k\":\"v\"},"
                         "\"sdk_version\":\"0.25.0\",\"type\":\"create_session\"}",
                         "session_id");
  char body[2048];
  snprintf(body, sizeof(body), "{\"session_id\":\"%s\",\"type\":\"session_heartbeat\"}", sid);
  stepf("POST", "/api/v1/session_heartbeat", NULL, body, 200);

  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":0,\"base_model\":\"base\","
           "\"lora_config\":{\"rank\":4,\"seed\":3,\"train_unembed\":true,"
           "\"train_mlp\":true,\"train_attn\":true},\"type\":\"create_model\"}",
           sid);
  tinker_op("/api/v1/create_model", body);
  char mid[256];
  snprintf(mid, sizeof(mid), "%s:train:0", sid);

  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"type\":\"get_info\"}", mid);
  stepf("POST", "/api/v1/get_info", NULL, body, 200);

  char *b = fwd_body(mid, 1, "forward_input", "cross_entropy", "[1,2,3,4]", SFT_INPUTS);
  tinker_op("/api/v1/forward", b);
  free(b);
  b = fwd_body(mid, 2, "forward_backward_input", "cross_entropy", "[1,2,3,4]", SFT_INPUTS);
  tinker_op("/api/v1/forward_backward", b);
  free(b);
  /* A protobuf request; its result in protobuf and in JSON. */
  size_t plen;
  uint8_t *pb = proto_body(mid, 3, &plen);
  hc_t *c = step_raw("/api/v1/forward_backward",
                     "Content-Type: application/x-protobuf\r\n"
                     "Accept: application/x-protobuf\r\n",
                     pb, plen);
  ASSERT_EQ_INT(c->status, 200);
  char *rid = field_of(c, "request_id");
  hc_free(c);
  free(pb);
  await_tinker_as(rid, "Accept: application/x-protobuf\r\n", PB_FWDBWD);
  await_tinker(rid, NULL);
  free(rid);

  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":4,\"adam_params\":{\"learning_rate\":0.01,"
           "\"beta1\":0.9,\"beta2\":0.95,\"eps\":1e-12},\"type\":\"optim_step\"}",
           mid);
  tinker_op("/api/v1/optim_step", body);
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":5,\"path\":\"w1\",\"type\":\"save_weights\"}", mid);
  tinker_op("/api/v1/save_weights", body);
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":6,\"path\":\"tinker://%s/weights/w1\","
           "\"optimizer\":true,\"type\":\"load_weights\"}",
           mid, mid);
  tinker_op("/api/v1/load_weights", body);
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":7,\"path\":\"s1\","
           "\"type\":\"save_weights_for_sampler\"}",
           mid);
  tinker_op("/api/v1/save_weights_for_sampler", body);
  snprintf(body, sizeof(body), "{\"tinker_path\":\"tinker://%s/weights/w1\"}", mid);
  stepf("POST", "/api/v1/weights_info", NULL, body, 200);

  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"sampling_session_seq_id\":0,"
           "\"model_path\":\"tinker://%s/sampler_weights/s1\","
           "\"type\":\"create_sampling_session\"}",
           sid, mid);
  char *ssid = step_field("POST", "/api/v1/create_sampling_session", NULL, body,
                          "sampling_session_id");
  char path[512];
  snprintf(path, sizeof(path), "/api/v1/samplers/%s", ssid);
  stepf("GET", path, NULL, NULL, 200);
  snprintf(body, sizeof(body),
           "{\"sampling_session_id\":\"%s\",\"seq_id\":0,\"num_samples\":2,"
           "\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2,3]}]},"
           "\"sampling_params\":{\"max_tokens\":5,\"seed\":7,\"temperature\":1.0},"
           "\"prompt_logprobs\":true,\"type\":\"sample\"}",
           ssid);
  rid = step_field("POST", "/api/v1/asample", NULL, body, "request_id");
  await_tinker(rid, NULL);
  await_tinker_as(rid, "Accept: application/x-protobuf\r\n", PB_SAMPLE);
  free(rid);
  free(ssid);
  /* A base-model sampling session. */
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"sampling_session_seq_id\":1,\"base_model\":\"base\","
           "\"type\":\"create_sampling_session\"}",
           sid);
  ssid = step_field("POST", "/api/v1/create_sampling_session", NULL, body,
                    "sampling_session_id");
  snprintf(body, sizeof(body),
           "{\"sampling_session_id\":\"%s\",\"seq_id\":0,"
           "\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,99999]}]},"
           "\"sampling_params\":{\"max_tokens\":2},\"type\":\"sample\"}",
           ssid);
  stepf("POST", "/api/v1/asample", NULL, body, 400);
  free(ssid);

  stepf("GET", "/api/v1/sessions", NULL, NULL, 200);
  snprintf(path, sizeof(path), "/api/v1/sessions/%s", sid);
  stepf("GET", path, NULL, NULL, 200);

  /* The REST routes over the run and its checkpoints. */
  stepf("GET", "/api/v1/training_runs", NULL, NULL, 200);
  stepf("GET", "/api/v1/training_runs?limit=5&offset=0", NULL, NULL, 200);
  snprintf(path, sizeof(path), "/api/v1/training_runs/%s", mid);
  stepf("GET", path, NULL, NULL, 200);
  snprintf(path, sizeof(path), "/api/v1/training_runs/%s/checkpoints", mid);
  stepf("GET", path, NULL, NULL, 200);
  stepf("GET", "/api/v1/checkpoints", NULL, NULL, 200);
  snprintf(path, sizeof(path), "/api/v1/training_runs/%s/checkpoints/weights/w1/publish", mid);
  stepf("POST", path, NULL, NULL, 200);
  stepf("POST", path, NULL, NULL, 409);
  stepf("DELETE", path, NULL, NULL, 200);
  snprintf(path, sizeof(path), "/api/v1/training_runs/%s/checkpoints/weights/w1/ttl", mid);
  stepf("PUT", path, NULL, "{\"ttl_seconds\":3600}", 200);
  stepf("PUT", path, NULL, "{\"ttl_seconds\":null}", 200);
  snprintf(path, sizeof(path), "/api/v1/training_runs/%s/checkpoints/weights/w1/archive", mid);
  c = step("GET", path, NULL, NULL);
  ASSERT_EQ_INT(c->status, 200);
  char *url = field_of(c, "url");
  hc_free(c);
  /* The tar itself: its status and type (the bytes hold file times). */
  const char *tail = strstr(url, "/api/v1/checkpoint_archives/");
  ASSERT(tail != NULL);
  c = hc_do("GET", tail, NULL, NULL);
  put_request("GET", tail, NULL, NULL, 0);
  ASSERT_OK(tb__buf_printf(&G.out, "<<< %d\n", c->status));
  put_head(c->head);
  ASSERT_OK(tb__buf_printf(&G.out, "(a tar of %s bytes)\n\n",
                           c->body_len > 1024 ? "over 1024" : "up to 1024"));
  ASSERT_EQ_INT(c->status, 200);
  hc_free(c);
  free(url);
  snprintf(path, sizeof(path), "/api/v1/training_runs/%s/checkpoints/sampler_weights/s1", mid);
  stepf("DELETE", path, NULL, NULL, 200);
  stepf("DELETE", path, NULL, NULL, 404);

  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"type\":\"unload_model\"}", mid);
  tinker_op("/api/v1/unload_model", body);
  snprintf(body, sizeof(body), "{\"session_id\":\"%s\",\"type\":\"close_session\"}", sid);
  stepf("POST", "/api/v1/close_session", NULL, body, 200);
  snprintf(body, sizeof(body), "{\"session_id\":\"%s\",\"type\":\"session_heartbeat\"}", sid);
  stepf("POST", "/api/v1/session_heartbeat", NULL, body, 410);

  step_metrics();
  free(sid);
  stop_training();
  golden_check("tinker");
}

/* The Tinkerbell dialect: sync and _async routes, the legacy paths,
 * /retrieve_future, text routes. */
TEST(golden_tinkerbell) {
  start_training(NULL);
  stepf("POST", "/api/v1/add_lora", NULL,
        "{\"model_id\":\"m1\",\"base_model\":\"base\",\"rank\":8,\"alpha\":16,\"seed\":5}", 200);
  tinkerbell_async("/api/v1/add_lora_async", "{\"model_id\":\"m2\",\"rank\":4,\"seed\":6}", 200);
  const char *fb = "{\"model_id\":\"m1\",\"data\":" HELLO ",\"loss_fn\":\"cross_entropy\"}";
  stepf("POST", "/api/v1/forward_backward", NULL, fb, 200);
  tinkerbell_async("/api/v1/forward_backward_async", fb, 200);
  tinkerbell_async("/fwdbwd", fb, 200);
  const char *fw = "{\"model_id\":\"m1\",\"data\":" HELLO "}";
  stepf("POST", "/api/v1/forward", NULL, fw, 200);
  tinkerbell_async("/api/v1/forward_async", fw, 200);
  tinkerbell_async("/fwd", fw, 200);
  const char *opt = "{\"model_id\":\"m1\",\"adam_params\":{\"learning_rate\":0.01}}";
  stepf("POST", "/api/v1/optim_step", NULL, opt, 200);
  tinkerbell_async("/api/v1/optim_step_async", opt, 200);
  tinkerbell_async("/optim_step", "{\"model_id\":\"m1\"}", 200);
  stepf("POST", "/api/v1/save_weights", NULL, "{\"model_id\":\"m1\",\"path\":\"c1\"}", 200);
  tinkerbell_async("/api/v1/save_weights_async", "{\"model_id\":\"m1\",\"path\":\"c2\"}", 200);
  tinkerbell_async("/save_weights", "{\"model_id\":\"m1\",\"path\":\"c3\"}", 200);
  tinkerbell_async("/save_weights", "{\"model_id\":\"m1\",\"path\":\"c3\"}", 500);
  tinkerbell_async("/save_weights", "{\"model_id\":\"m1\",\"path\":\"c3\",\"overwrite\":true}",
                   200);
  stepf("POST", "/api/v1/save_weights_for_sampler", NULL,
        "{\"model_id\":\"m1\",\"path\":\"s1\"}", 200);
  tinkerbell_async("/api/v1/save_weights_for_sampler_async",
                   "{\"model_id\":\"m1\",\"path\":\"s2\"}", 200);
  tinkerbell_async("/save_weights_for_sampler", "{\"model_id\":\"m1\",\"path\":\"s3\"}", 200);
  stepf("POST", "/api/v1/load_weights", NULL,
        "{\"model_id\":\"m3\",\"path\":\"tinkerbell://m1/weights/c1\"}", 200);
  tinkerbell_async("/api/v1/load_weights_async",
                   "{\"model_id\":\"m3\",\"path\":\"tinkerbell://m1/weights/c2\"}", 200);
  tinkerbell_async("/load_weights", "{\"model_id\":\"m1\",\"path\":\"c3\"}", 200);
  stepf("POST", "/get_info", NULL, "{\"model_id\":\"m1\"}", 200);
  stepf("GET", "/list_loss_functions", NULL, NULL, 200);
  stepf("POST", "/api/v1/sample", NULL,
        "{\"model_id\":\"m1\",\"prompt\":\"Hello!\",\"max_tokens\":6,\"temperature\":0}", 200);
  stepf("POST", "/api/v1/sample", NULL,
        "{\"model_id\":\"m1\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello!\"}],"
        "\"max_tokens\":4,\"seed\":9}",
        200);
  tinkerbell_async("/api/v1/asample", "{\"prompt\":\"hi\",\"max_tokens\":3,\"seed\":2}", 200);
  tinkerbell_async("/api/v1/asample",
                   "{\"model_id\":\"m1\",\"prompts\":[\"hi\"],\"sampling_params\":{\"n\":2,"
                   "\"max_tokens\":3,\"seed\":4}}",
                   200);
  stepf("POST", "/api/v1/tokenize", NULL, "{\"base_model\":\"base\",\"text\":\"Hi<|end|>\"}",
        200);
  stepf("POST", "/api/v1/tokenize", NULL,
        "{\"model_id\":\"m1\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
        "\"add_generation_prompt\":true}",
        200);
  stepf("POST", "/api/v1/detokenize", NULL, "{\"tokens\":[72,105]}", 200);
  stepf("POST", "/api/v1/remove_lora", NULL, "{\"model_id\":\"m3\"}", 200);
  tinkerbell_async("/api/v1/remove_lora_async", "{\"model_id\":\"m2\"}", 200);
  tinkerbell_async("/remove_lora", "{\"model_id\":\"m1\"}", 200);
  tinkerbell_async("/add_lora", "{\"model_id\":\"legacy\",\"rank\":8}", 200);
  step_metrics();
  stop_training();
  golden_check("tinkerbell");
}

/* /retrieve_future: 202 while a job waits (held by the model limit),
 * 200, 500 for a failed job, 404, 400; and the Tinker retrieve_future's
 * answers for the same. */
TEST(golden_retrieve_future) {
  tb_server_options_t o = { .max_models_per_user = 1, .long_poll_ms = 100 };
  start_training(&o);
  stepf("POST", "/api/v1/add_lora", NULL, "{\"model_id\":\"first\",\"seed\":1}", 200);
  const char *fb = "{\"model_id\":\"second\",\"data\":" HELLO ",\"loss_fn\":\"cross_entropy\"}";
  char *rid = step_field("POST", "/api/v1/forward_backward_async", NULL, fb, "request_id");
  char body[256];
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\"}", rid);
  stepf("POST", "/retrieve_future", NULL, body, 202);
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\",\"allow_metadata_only\":false}", rid);
  stepf("POST", "/api/v1/retrieve_future", NULL, body, 200);  /* try_again */
  stepf("POST", "/api/v1/remove_lora", NULL, "{\"model_id\":\"first\"}", 200);
  await_tinkerbell(rid, 200);
  await_tinker(rid, NULL);
  free(rid);
  /* A job that fails: 500 with the failure. */
  rid = step_field("POST", "/api/v1/load_weights_async", NULL,
                   "{\"model_id\":\"second\",\"path\":\"missing\"}", "request_id");
  await_tinkerbell(rid, 500);
  await_tinker(rid, NULL);
  free(rid);
  stepf("POST", "/retrieve_future", NULL,
        "{\"request_id\":\"req-00000000000000000000000000000000\"}", 404);
  stepf("POST", "/api/v1/retrieve_future", NULL,
        "{\"request_id\":\"req-00000000000000000000000000000000\"}", 404);
  stepf("POST", "/retrieve_future", NULL, "{}", 400);
  stepf("POST", "/retrieve_future", NULL, "{\"request_id\":7}", 400);
  stepf("POST", "/retrieve_future", NULL, "not json", 400);
  stepf("POST", "/api/v1/retrieve_future", NULL, "{}", 400);
  stop_training();
  golden_check("retrieve_future");
}

/* The main error answers: 400, 401, 404, 405, 410, 413, 422 (and 409,
 * 429 on the way). */
TEST(golden_errors) {
  char keys[] = "/tmp/tb-keys-XXXXXX";
  tb_test_temp_file(keys, "k-alice alice\nk-bob bob\n");
  tb_server_options_t o = { .api_keys_file = keys, .max_body = 4096, .result_ttl_ms = 50 };
  start_training(&o);
  const char *alice = "X-API-Key: k-alice\r\n", *bob = "X-API-Key: k-bob\r\n";
  /* 401 */
  stepf("POST", "/api/v1/create_session", NULL, "{\"type\":\"create_session\"}", 401);
  stepf("POST", "/fwdbwd", "X-API-Key: nope\r\n", "{\"model_id\":\"x\",\"data\":[]}", 401);
  stepf("GET", "/api/v1/training_runs", NULL, NULL, 401);
  stepf("GET", "/api/v1/healthz", NULL, NULL, 200);
  /* 404 */
  stepf("GET", "/nothing/here", alice, NULL, 404);
  stepf("POST", "/api/v1/get_info", alice,
        "{\"model_id\":\"nobody:train:0\",\"type\":\"get_info\"}", 404);
  stepf("POST", "/api/v1/remove_lora", alice, "{\"model_id\":\"ghost\"}", 404);
  stepf("GET", "/api/v1/training_runs/nope", alice, NULL, 404);
  stepf("GET", "/api/v1/checkpoint_archives/arc-nothing", NULL, NULL, 404);
  stepf("POST", "/api/v1/tokenize", alice, "{\"text\":\"x\",\"base_model\":\"nope\"}", 404);
  /* 405 */
  stepf("GET", "/api/v1/forward_backward", alice, NULL, 405);
  stepf("POST", "/api/v1/healthz", alice, "{}", 405);
  /* 400 */
  stepf("POST", "/api/v1/forward_backward", alice, "[1,2]", 400);
  stepf("POST", "/api/v1/forward_backward", alice, "{\"model_id\":\"x\",\"data\":[]}", 400);
  stepf("POST", "/api/v1/forward_backward", alice, "{\"data\":[[]]}", 400);
  stepf("POST", "/api/v1/create_model", alice, "{\"type\":\"create_model\"}", 400);
  stepf("POST", "/api/v1/create_session", alice, "not json", 400);
  stepf("POST", "/api/v1/tokenize", alice, "{}", 400);
  stepf("POST", "/api/v1/detokenize", alice, "{\"tokens\":[1,272]}", 400);
  stepf("GET", "/api/v1/training_runs?limit=0", alice, NULL, 400);
  stepf("GET", "/api/v1/training_runs/%2E%2E", alice, NULL, 400);
  stepf("POST", "/api/v1/add_lora", alice, "{\"rank\":\"big\"}", 400);
  /* 422 */
  stepf("POST", "/api/v1/tokenize", alice,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"renderer\":\"qwen3\"}", 422);
  /* 413 */
  char *big = xmalloc(8192);
  memset(big, ' ', 8191);
  big[0] = '{';
  big[8189] = '}';
  big[8190] = '\0';
  stepf("POST", "/api/v1/telemetry", alice, big, 413);
  free(big);
  /* 409 and ownership */
  stepf("POST", "/api/v1/add_lora", alice, "{\"model_id\":\"mine\"}", 200);
  stepf("POST", "/api/v1/add_lora", alice, "{\"model_id\":\"mine\"}", 409);
  stepf("POST", "/api/v1/tokenize", bob, "{\"model_id\":\"mine\",\"text\":\"x\"}", 404);
  /* 410: a closed session, an expired result. */
  char *sid = step_field("POST", "/api/v1/create_session", alice,
                         "{\"tags\":[],\"user_metadata\":{},\"sdk_version\":\"0.25.0\","
                         "\"type\":\"create_session\"}",
                         "session_id");
  char body[512];
  snprintf(body, sizeof(body), "{\"session_id\":\"%s\",\"type\":\"close_session\"}", sid);
  stepf("POST", "/api/v1/close_session", alice, body, 200);
  snprintf(body, sizeof(body), "{\"session_id\":\"%s\",\"type\":\"session_heartbeat\"}", sid);
  stepf("POST", "/api/v1/session_heartbeat", alice, body, 410);
  free(sid);
  char *rid = step_field("POST", "/api/v1/optim_step_async", alice, "{\"model_id\":\"mine\"}",
                         "request_id");
  tb__user_t *u = tb__auth_user(&srv->auth, "alice");
  ASSERT(u != NULL);
  wait_done(rid, u);
  wait_ms(200);
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\"}", rid);
  stepf("POST", "/retrieve_future", alice, body, 410);
  free(rid);
  stop_training();
  unlink(keys);
  golden_check("errors");
}

TEST_LIST(
  TEST_ENTRY(golden_tinker),
  TEST_ENTRY(golden_tinkerbell),
  TEST_ENTRY(golden_retrieve_future),
  TEST_ENTRY(golden_errors),
)
