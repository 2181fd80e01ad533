/*
 * The text layer on small tokenizer files made here: BPE merges by rank,
 * added tokens and their flags, the post-processor, offsets, streaming
 * decode, several threads on one tokenizer, and every kind of bad input
 * the loader, encoder, decoder and renderers must refuse with a message
 * naming the file and field (truncated files at every byte among them).
 * The comparisons with the reference on real files are test_text_real.c
 * and test_render_real.c.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "tb_test.h"
#include "text_ref.h"
#include "tinkerbell/renderer.h"
#include "tinkerbell/tokenizer.h"

enum { ID_HE = 256, ID_LL, ID_HELL, ID_HELLO, ID_SPACE_W, ID_BOS, ID_EOT, ID_SEP, ID_THINK };

/* A byte-level BPE tokenizer.json: the 256 byte tokens (id = byte), the
 * merges h+e, l+l, he+ll, hell+o, Ġ+w, and added tokens. */
static json_t *small_tokenizer(void) {
  json_t *vocab = json_object();
  for (int b = 0; b < 256; b++) {
    char c[3];
    tb_text_byte_char(b, c);
    json_object_set_new(vocab, c, json_integer(b));
  }
  const char *merged[] = { "he", "ll", "hell", "hello", "\xc4\xa0w" };
  for (int i = 0; i < 5; i++)
    json_object_set_new(vocab, merged[i], json_integer(256 + i));
  json_t *merges = json_pack("[s,s,[s,s],s,s]", "h e", "l l", "he", "ll", "hell o",
                             "\xc4\xa0 w");
  json_t *added = json_pack(
      "[{s:i,s:s,s:b,s:b,s:b,s:b,s:b},{s:i,s:s,s:b,s:b,s:b,s:b,s:b},"
      "{s:i,s:s,s:b,s:b,s:b,s:b,s:b},{s:i,s:s,s:b,s:b,s:b,s:b,s:b}]",
      "id", ID_BOS, "content", "<|bos|>", "single_word", 0, "lstrip", 0, "rstrip", 0,
      "normalized", 0, "special", 1,
      "id", ID_EOT, "content", "<|eot|>", "single_word", 0, "lstrip", 1, "rstrip", 1,
      "normalized", 0, "special", 1,
      "id", ID_SEP, "content", "<|eot|>x", "single_word", 0, "lstrip", 0, "rstrip", 0,
      "normalized", 0, "special", 1,
      "id", ID_THINK, "content", "think", "single_word", 1, "lstrip", 0, "rstrip", 0,
      "normalized", 0, "special", 0);
  return json_pack(
      "{s:s,s:o,s:{s:s},s:{s:s,s:[{s:s,s:{s:s},s:s,s:b},{s:s,s:b,s:b,s:b}]},"
      "s:{s:s,s:[{s:s,s:b},{s:s,s:[{s:{s:s}},{s:{s:s}}],s:{s:{s:[i]}}}]},"
      "s:{s:s},s:{s:s,s:o,s:o,s:b,s:b}}",
      "version", "1.0", "added_tokens", added,
      "normalizer", "type", "NFC",
      "pre_tokenizer", "type", "Sequence", "pretokenizers",
      "type", "Split", "pattern", "Regex", "'s|'t| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
      "behavior", "Isolated", "invert", 0,
      "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 0, "use_regex", 0,
      "post_processor", "type", "Sequence", "processors",
      "type", "ByteLevel", "trim_offsets", 0,
      "type", "TemplateProcessing", "single", "SpecialToken", "id", "<|bos|>", "Sequence", "id",
      "A", "special_tokens", "<|bos|>", "ids", ID_BOS,
      "decoder", "type", "ByteLevel",
      "model", "type", "BPE", "vocab", vocab, "merges", merges, "ignore_merges", 0,
      "byte_fallback", 0);
}

static const char small_config[] =
    "{\"bos_token\": \"<|bos|>\", \"eos_token\": {\"content\": \"<|eot|>\"}, \"pad_token\": null,"
    " \"model_max_length\": 1000000000000000019884624838656,"
    " \"chat_template\": \"{{ messages }}\"}";

static int load_json(json_t *j, const char *config, tb_tokenizer_t **out, tb_error_t *err) {
  char *s = json_dumps(j, JSON_COMPACT);
  tb_tokenizer_source_t tj = { s, strlen(s), "tokenizer.json" };
  tb_tokenizer_source_t cf = { config, config ? strlen(config) : 0, "tokenizer_config.json" };
  int rc = tb_tokenizer_load_buffers(&tj, &cf, NULL, out, err);
  free(s);
  return rc;
}

static tb_tokenizer_t *small(void) {
  json_t *j = small_tokenizer();
  tb_tokenizer_t *t;
  tb_error_t err = { 0 };
  if (load_json(j, small_config, &t, &err) != 0)
    tb_test_fail(__FILE__, __LINE__, "load: %s", tb_error_message(&err));
  json_decref(j);
  return t;
}

static void expect_ids(tb_tokenizer_t *t, const char *text, int flags, const int32_t *want,
                       size_t nw) {
  int32_t *ids;
  size_t *offs, n;
  tb_error_t err = { 0 };
  ASSERT_OK(tb_tokenizer_encode(t, text, strlen(text), flags, &ids, &offs, &n, &err));
  int same = n == nw && memcmp(ids, want, n * sizeof(*ids)) == 0;
  if (!same) {
    fprintf(stderr, "\"%s\": got", text);
    for (size_t i = 0; i < n; i++)
      fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
  }
  ASSERT(same);
  /* offsets: in order, inside the text */
  for (size_t i = 0; i < n; i++) {
    ASSERT(offs[2 * i] <= offs[2 * i + 1]);
    ASSERT(offs[2 * i + 1] <= strlen(text));
    if (i > 0)
      ASSERT(offs[2 * i] >= offs[2 * i - 2]);
  }
  free(ids);
  free(offs);
}

TEST(bpe_merges_by_rank) {
  tb_tokenizer_t *t = small();
  const int32_t hello[] = { ID_HELLO };
  expect_ids(t, "hello", 0, hello, 1);
  /* " hello": the space has no merge with h, so Ġ then hello */
  const int32_t sp_hello[] = { ' ', ID_HELLO };
  expect_ids(t, " hello", 0, sp_hello, 2);
  /* "hellx": he+ll merged, then x alone */
  const int32_t hellx[] = { ID_HELL, 'x' };
  expect_ids(t, "hellx", 0, hellx, 2);
  /* " w" is one token: Ġw */
  const int32_t w[] = { ID_SPACE_W };
  expect_ids(t, " w", 0, w, 1);
  /* a long word goes through the heap merge: the same as its halves */
  char big[400];
  for (int i = 0; i < 80; i++)
    memcpy(big + 5 * i, "hello", 5);
  big[400 - 1] = 0;
  big[395] = 0;
  int32_t *ids;
  size_t n;
  tb_error_t err = { 0 };
  ASSERT_OK(tb_tokenizer_encode(t, big, strlen(big), 0, &ids, NULL, &n, &err));
  ASSERT_EQ_INT(n, 79);
  for (size_t i = 0; i < n; i++)
    ASSERT_EQ_INT(ids[i], ID_HELLO);
  free(ids);
  ASSERT_EQ_INT(tb_tokenizer_vocab_size(t), ID_THINK + 1);
  ASSERT_EQ_INT(tb_tokenizer_token_to_id(t, "hello", 5), ID_HELLO);
  ASSERT_EQ_INT(tb_tokenizer_token_to_id(t, "nope", 4), -1);
  size_t l;
  ASSERT(memcmp(tb_tokenizer_id_to_token(t, ID_SPACE_W, &l), "\xc4\xa0w", 3) == 0 && l == 3);
  ASSERT(tb_tokenizer_id_to_token(t, 100000, &l) == NULL);
  ASSERT_EQ_INT(tb_tokenizer_bos_id(t), ID_BOS);
  ASSERT_EQ_INT(tb_tokenizer_eos_id(t), ID_EOT);
  ASSERT_EQ_INT(tb_tokenizer_pad_id(t), -1);
  tb_tokenizer_free(t);
}

TEST(added_tokens_and_their_flags) {
  tb_tokenizer_t *t = small();
  /* longest match: <|eot|>x is a token of its own */
  const int32_t a[] = { ID_HELLO, ID_SEP };
  expect_ids(t, "hello<|eot|>x", 0, a, 2);
  /* lstrip and rstrip: the spaces around <|eot|> belong to it */
  const int32_t b[] = { 'a', ID_EOT, 'b' };
  expect_ids(t, "a  <|eot|>  b", 0, b, 3);
  /* special tokens as text: bytes and merges instead */
  int32_t *ids;
  size_t n;
  tb_error_t err = { 0 };
  ASSERT_OK(tb_tokenizer_encode(t, "<|bos|>", 7, TB_ENCODE_SPECIAL_AS_TEXT, &ids, NULL, &n, &err));
  ASSERT_GT(n, 1);
  for (size_t i = 0; i < n; i++)
    ASSERT_LT(ids[i], 256);
  free(ids);
  /* single_word: "think" alone is the added token, inside a word it is not */
  const int32_t c[] = { ID_THINK };
  expect_ids(t, "think", 0, c, 1);
  ASSERT_OK(tb_tokenizer_encode(t, "rethink", 7, 0, &ids, NULL, &n, &err));
  for (size_t i = 0; i < n; i++)
    ASSERT_NE_INT(ids[i], ID_THINK);
  free(ids);
  /* a non-special added token stays one under SPECIAL_AS_TEXT */
  expect_ids(t, "think", TB_ENCODE_SPECIAL_AS_TEXT, c, 1);
  ASSERT(tb_tokenizer_is_special(t, ID_EOT));
  ASSERT(!tb_tokenizer_is_special(t, ID_THINK));
  tb_tokenizer_free(t);
}

TEST(post_processor_adds_bos_once) {
  tb_tokenizer_t *t = small();
  const int32_t a[] = { ID_BOS, ID_HELLO };
  expect_ids(t, "hello", TB_ENCODE_ADD_SPECIAL, a, 2);
  expect_ids(t, "<|bos|>hello", TB_ENCODE_ADD_SPECIAL, a, 2);
  const int32_t b[] = { ID_BOS };
  expect_ids(t, "", TB_ENCODE_ADD_SPECIAL, b, 1);
  expect_ids(t, "", 0, b, 0);
  tb_tokenizer_free(t);
}

TEST(offsets_cover_the_text) {
  tb_tokenizer_t *t = small();
  /* NFD input is normalized to NFC: the changed stretch keeps its bytes */
  const char *texts[] = { "hello world  <|eot|> 12 caf\xc3\xa9", "cafe\xcc\x81 hello",
                          " \xe4\xbd\xa0\xe5\xa5\xbd!" };
  for (size_t k = 0; k < 3; k++) {
    int32_t *ids;
    size_t *offs, n;
    tb_error_t err = { 0 };
    ASSERT_OK(tb_tokenizer_encode(t, texts[k], strlen(texts[k]), 0, &ids, &offs, &n, &err));
    ASSERT_EQ_INT(offs[0], 0);
    ASSERT_EQ_INT(offs[2 * n - 1], strlen(texts[k]));
    for (size_t i = 1; i < n; i++)
      ASSERT(offs[2 * i] <= offs[2 * i - 1] + 2 && offs[2 * i] >= offs[2 * i - 2]);
    free(ids);
    free(offs);
  }
  tb_tokenizer_free(t);
}

TEST(streaming_decode_holds_half_characters) {
  tb_tokenizer_t *t = small();
  tb_decoder_t *d;
  ASSERT_OK(tb_decoder_new(t, 0, &d));
  char *out = NULL;
  size_t len = 0;
  tb_error_t err = { 0 };
  int32_t e1 = 0xC3, e2 = 0xA9, bad = 0xFF;
  ASSERT_OK(tb_decoder_feed(d, &e1, 1, &out, &len, &err));
  ASSERT_EQ_INT(len, 0);
  ASSERT_OK(tb_decoder_feed(d, &e2, 1, &out, &len, &err));
  ASSERT_MEM_EQ_STR(out, len, "\xc3\xa9");
  ASSERT_OK(tb_decoder_feed(d, &bad, 1, &out, &len, &err));
  ASSERT_MEM_EQ_STR(out, len, "\xc3\xa9\xef\xbf\xbd");
  ASSERT_OK(tb_decoder_feed(d, &e1, 1, &out, &len, &err));
  ASSERT_OK(tb_decoder_finish(d, &out, &len));
  ASSERT_MEM_EQ_STR(out, len, "\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd");
  int32_t oob = 99999;
  ASSERT_ERR(tb_decoder_feed(d, &oob, 1, &out, &len, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(tb_error_message(&err), "tokens[0]: 99999");
  tb_error_clear(&err);
  free(out);
  tb_decoder_free(d);
  /* whole decode, special tokens kept or skipped */
  int32_t ids[] = { ID_BOS, ID_HELLO, ID_SPACE_W, ID_EOT };
  char *text;
  ASSERT_OK(tb_tokenizer_decode(t, ids, 4, 0, &text, &len, &err));
  ASSERT_STR_EQ(text, "<|bos|>hello w<|eot|>");
  free(text);
  ASSERT_OK(tb_tokenizer_decode(t, ids, 4, TB_DECODE_SKIP_SPECIAL, &text, &len, &err));
  ASSERT_STR_EQ(text, "hello w");
  free(text);
  ASSERT_ERR(tb_tokenizer_decode(t, &oob, 1, 0, &text, &len, &err), TB_EINVAL);
  tb_error_clear(&err);
  tb_tokenizer_free(t);
}

typedef struct worker_s {
  const tb_tokenizer_t *t;
  int id;
  int bad;
} worker_t;

static const char *const thread_texts[] = {
  "hello world, hello again", "  hellx hello\tworld 123 456", "caf\xc3\xa9 <|eot|> think",
  "\xe4\xbd\xa0\xe5\xa5\xbd hello", "'s 't hello's", "wwww hello hello hello",
};

static void worker(void *arg) {
  worker_t *w = arg;
  for (int r = 0; r < 300; r++) {
    const char *s = thread_texts[(size_t)(r + w->id) % 6];
    int32_t *a, *b;
    size_t na, nb;
    tb_error_t err = { 0 };
    /* with offsets (no cache) and without (the cache): the same ids */
    size_t *offs;
    if (tb_tokenizer_encode(w->t, s, strlen(s), 0, &a, NULL, &na, &err) != 0 ||
        tb_tokenizer_encode(w->t, s, strlen(s), 0, &b, &offs, &nb, &err) != 0) {
      w->bad++;
      continue;
    }
    w->bad += na != nb || memcmp(a, b, na * sizeof(*a)) != 0;
    free(a);
    free(b);
    free(offs);
  }
}

TEST(threads_share_one_tokenizer) {
  tb_tokenizer_t *t = small();
  worker_t w[4];
  uv_thread_t th[4];
  for (int i = 0; i < 4; i++) {
    w[i] = (worker_t){ t, i, 0 };
    ASSERT_OK(uv_thread_create(&th[i], worker, &w[i]));
  }
  for (int i = 0; i < 4; i++) {
    ASSERT_OK(uv_thread_join(&th[i]));
    ASSERT_EQ_INT(w[i].bad, 0);
  }
  tb_tokenizer_free(t);
}

/* An added token with normalized=true is matched in the normalized text
 * (NFD input finds the NFC token); byte_fallback stands in for a byte
 * without a token of its own. */
TEST(normalized_added_tokens_and_byte_fallback) {
  json_t *j = small_tokenizer();
  json_array_append_new(json_object_get(j, "added_tokens"),
                        json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", ID_THINK + 1, "content",
                                  "caf\xc3\xa9", "single_word", 0, "lstrip", 0, "rstrip", 0,
                                  "normalized", 1, "special", 0));
  json_t *vocab = json_object_get(json_object_get(j, "model"), "vocab");
  json_object_del(vocab, "A");
  json_object_set_new(vocab, "<0x41>", json_integer('A'));
  json_object_set_new(json_object_get(j, "model"), "byte_fallback", json_true());
  tb_tokenizer_t *t;
  tb_error_t err = { 0 };
  ASSERT_OK(load_json(j, NULL, &t, &err));
  const int32_t a[] = { ID_HELLO, ' ', ID_THINK + 1 };
  expect_ids(t, "hello cafe\xcc\x81", 0, a, 3);
  expect_ids(t, "hello caf\xc3\xa9", 0, a, 3);
  const int32_t b[] = { 'A', ID_HELLO };
  expect_ids(t, "Ahello", 0, b, 2);
  tb_tokenizer_free(t);
  /* without byte_fallback (or an unknown token) a byte without a token is
   * refused at load, naming it */
  json_object_set_new(json_object_get(j, "model"), "byte_fallback", json_false());
  ASSERT_ERR(load_json(j, NULL, &t, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(tb_error_message(&err), "model.vocab: no token for the byte 0x41");
  tb_error_clear(&err);
  json_decref(j);
}

/* generation_config.json's ids win over tokenizer_config.json's names, and
 * its eos_token_id may be a list (Llama 3.1's is). */
TEST(generation_config_ids) {
  json_t *j = small_tokenizer();
  char *s = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  char gen[128];
  snprintf(gen, sizeof(gen), "{\"bos_token_id\": %d, \"eos_token_id\": [%d, %d], "
           "\"pad_token_id\": %d}", ID_THINK, ID_SEP, ID_EOT, ID_BOS);
  tb_tokenizer_source_t tj = { s, strlen(s), "tokenizer.json" };
  tb_tokenizer_source_t cf = { small_config, strlen(small_config), "tokenizer_config.json" };
  tb_tokenizer_source_t gc = { gen, strlen(gen), "generation_config.json" };
  tb_tokenizer_t *t;
  tb_error_t err = { 0 };
  ASSERT_OK(tb_tokenizer_load_buffers(&tj, &cf, &gc, &t, &err));
  ASSERT_EQ_INT(tb_tokenizer_bos_id(t), ID_THINK);
  ASSERT_EQ_INT(tb_tokenizer_eos_id(t), ID_SEP);
  ASSERT_EQ_INT(tb_tokenizer_pad_id(t), ID_BOS);
  size_t n;
  const int32_t *eos = tb_tokenizer_eos_ids(t, &n);
  ASSERT_EQ_INT(n, 2);
  ASSERT_EQ_INT(eos[0], ID_SEP);
  ASSERT_EQ_INT(eos[1], ID_EOT);
  tb_tokenizer_free(t);
  const char *bad = "{\"eos_token_id\": 999999}";
  gc = (tb_tokenizer_source_t){ bad, strlen(bad), "generation_config.json" };
  ASSERT_ERR(tb_tokenizer_load_buffers(&tj, &cf, &gc, &t, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(tb_error_message(&err), "generation_config.json: eos_token_id: expected an id");
  tb_error_clear(&err);
  free(s);
}

/* The tokenizer of j once its i-th pre-tokenizer's key is set to value
 * (taken). */
static tb_tokenizer_t *reload_with_pretokenizer(json_t *j, size_t i, const char *key,
                                                json_t *value) {
  json_object_set_new(json_array_get(json_object_get(json_object_get(j, "pre_tokenizer"),
                                                     "pretokenizers"), i),
                      key, value);
  tb_tokenizer_t *t;
  tb_error_t err = { 0 };
  ASSERT_OK(load_json(j, NULL, &t, &err));
  return t;
}

/* SmolLM2's pre-tokenizer: Digits (each digit alone), then ByteLevel with
 * GPT-2's pattern; and ByteLevel's add_prefix_space. */
TEST(digits_and_byte_level_pattern) {
  json_t *j = small_tokenizer();
  json_object_set_new(json_object_get(j, "model"), "merges",
                      json_pack("[s,s,s,s,s,s]", "h e", "l l", "he ll", "hell o", "\xc4\xa0 w",
                                "1 2"));
  json_object_set_new(json_object_get(json_object_get(j, "model"), "vocab"), "12",
                      json_integer(ID_THINK + 1));
  json_object_set(j, "pre_tokenizer",
                  json_pack("{s:s,s:[{s:s,s:b},{s:s,s:b,s:b,s:b}]}", "type", "Sequence",
                            "pretokenizers", "type", "Digits", "individual_digits", 1, "type",
                            "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex",
                            1));
  tb_tokenizer_t *t;
  tb_error_t err = { 0 };
  ASSERT_OK(load_json(j, NULL, &t, &err));
  /* "12" would merge, but Digits isolates each digit first */
  const int32_t a[] = { '1', '2', ID_HELLO };
  expect_ids(t, "12hello", 0, a, 3);
  const int32_t b[] = { ID_HELLO, ' ', ID_HELLO };
  expect_ids(t, "hello hello", 0, b, 3);
  tb_tokenizer_free(t);
  /* contiguous digits stay together, and merge */
  t = reload_with_pretokenizer(j, 0, "individual_digits", json_false());
  const int32_t c[] = { ID_THINK + 1, ID_HELLO };
  expect_ids(t, "12hello", 0, c, 2);
  tb_tokenizer_free(t);
  /* add_prefix_space: "hello" is read as " hello" */
  t = reload_with_pretokenizer(j, 1, "add_prefix_space", json_true());
  const int32_t d[] = { ' ', ID_HELLO };
  expect_ids(t, "hello", 0, d, 2);
  tb_tokenizer_free(t);
  json_decref(j);
}

/* ------------------------------------------------------------ bad input */

/* Loads the small tokenizer with path (dotted, into objects) set to v. */
static void expect_refused(const char *path, json_t *v, const char *msg) {
  json_t *j = small_tokenizer();
  json_t *o = j;
  char key[128];
  snprintf(key, sizeof(key), "%s", path);
  char *dot, *k = key;
  while ((dot = strchr(k, '.')) != NULL) {
    *dot = 0;
    o = json_object_get(o, k);
    k = dot + 1;
  }
  json_object_set_new(o, k, v);
  tb_tokenizer_t *t = (tb_tokenizer_t *)1;
  tb_error_t err = { 0 };
  int rc = load_json(j, NULL, &t, &err);
  if (rc != TB_EINVAL || t != NULL)
    tb_test_fail(__FILE__, __LINE__, "%s: loaded (rc %d)", path, rc);
  ASSERT_STR_CONTAINS(tb_error_message(&err), msg);
  tb_error_clear(&err);
  json_decref(j);
}

TEST(other_models_and_parts_are_refused) {
  expect_refused("model.type", json_string("Unigram"),
                 "tokenizer.json: model.type: \"Unigram\" is not supported");
  expect_refused("model.type", json_string("WordPiece"),
                 "tokenizer.json: model.type: \"WordPiece\" is not supported");
  expect_refused("normalizer", json_pack("{s:s}", "type", "Lowercase"),
                 "tokenizer.json: normalizer.type: \"Lowercase\" is not supported");
  expect_refused("pre_tokenizer", json_pack("{s:s}", "type", "Whitespace"),
                 "tokenizer.json: pre_tokenizer.type: \"Whitespace\" is not supported");
  expect_refused("pre_tokenizer", json_pack("{s:s,s:{s:s},s:s}", "type", "Split", "pattern",
                                            "Regex", "x", "behavior", "MergedWithNext"),
                 "pre_tokenizer.behavior: \"MergedWithNext\" is not supported");
  expect_refused("pre_tokenizer", json_pack("{s:s,s:{s:s},s:s}", "type", "Split", "pattern",
                                            "Regex", "(unclosed", "behavior", "Isolated"),
                 "pre_tokenizer.pattern: \"(unclosed\"");
  expect_refused("pre_tokenizer", json_pack("{s:s,s:{s:s},s:s}", "type", "Split", "pattern",
                                            "Regex", "\\s+", "behavior", "Isolated"),
                 "pre_tokenizer: no ByteLevel step");
  expect_refused("decoder", json_pack("{s:s}", "type", "WordPiece"),
                 "tokenizer.json: decoder.type: \"WordPiece\" is not supported");
  expect_refused("decoder", json_null(), "tokenizer.json: decoder: missing");
  expect_refused("post_processor", json_pack("{s:s}", "type", "RobertaProcessing"),
                 "post_processor.type: \"RobertaProcessing\" is not supported");
  expect_refused("model.dropout", json_real(0.1), "model.dropout");
  expect_refused("model.continuing_subword_prefix", json_string("##"),
                 "model.continuing_subword_prefix");
  expect_refused("model.merges", json_pack("[s]", "h q"),
                 "model.merges[0]: the merged token \"hq\" is not in model.vocab");
  expect_refused("model.merges", json_pack("[s]", "hx"),
                 "model.merges[0]: \"hx\" is not two tokens");
  expect_refused("model.vocab.big", json_integer(1LL << 40),
                 "model.vocab: \"big\": the id must be an integer in [0, 16777216)");
  expect_refused("model.vocab.neg", json_integer(-1), "model.vocab: \"neg\"");
  expect_refused("model.vocab.a", json_string("x"), "model.vocab");
  expect_refused("added_tokens", json_pack("[{s:i,s:s}]", "id", 1 << 30, "content", "x"),
                 "added_tokens[0].id");
  expect_refused("added_tokens", json_pack("[{s:i}]", "id", 3), "added_tokens[0].content");
  expect_refused("model", json_pack("{s:s}", "type", "BPE"), "model.vocab: missing");
}

TEST(truncated_and_corrupt_files_are_refused) {
  json_t *j = small_tokenizer();
  char *s = json_dumps(j, JSON_COMPACT);
  size_t n = strlen(s);
  /* Every proper prefix of the file, and every byte replaced by a brace. */
  for (size_t cut = 0; cut < n; cut += cut < 2000 ? 1 : 7) {
    tb_tokenizer_source_t src = { s, cut, "tokenizer.json" };
    tb_tokenizer_t *t;
    tb_error_t err = { 0 };
    int rc = tb_tokenizer_load_buffers(&src, NULL, NULL, &t, &err);
    if (rc != TB_EINVAL)
      tb_test_fail(__FILE__, __LINE__, "prefix of %zu bytes: rc %d", cut, rc);
    ASSERT_STR_CONTAINS(tb_error_message(&err), "tokenizer.json: ");
    tb_error_clear(&err);
  }
  for (size_t at = 0; at < n; at += 3) {
    char keep = s[at];
    s[at] = '{';
    tb_tokenizer_source_t src = { s, n, "tokenizer.json" };
    tb_tokenizer_t *t = NULL;
    tb_error_t err = { 0 };
    int rc = tb_tokenizer_load_buffers(&src, NULL, NULL, &t, &err);
    ASSERT(rc == 0 || rc == TB_EINVAL);
    tb_tokenizer_free(t);
    tb_error_clear(&err);
    s[at] = keep;
  }
  free(s);
  json_decref(j);
  /* Not JSON at all, and companion files that are not either. */
  tb_tokenizer_source_t junk = { "\x00\xff garbage", 10, "tokenizer.json" };
  tb_tokenizer_t *t;
  tb_error_t err = { 0 };
  ASSERT_ERR(tb_tokenizer_load_buffers(&junk, NULL, NULL, &t, &err), TB_EINVAL);
  tb_error_clear(&err);
  j = small_tokenizer();
  ASSERT_ERR(load_json(j, "{\"bos_token\": 5}", &t, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(tb_error_message(&err), "tokenizer_config.json: bos_token");
  tb_error_clear(&err);
  ASSERT_ERR(load_json(j, "{\"eos_token\": \"<|nope|>\"}", &t, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(tb_error_message(&err),
                      "tokenizer_config.json: eos_token: \"<|nope|>\" is not a token");
  tb_error_clear(&err);
  ASSERT_ERR(load_json(j, "[1,", &t, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(tb_error_message(&err), "tokenizer_config.json: ");
  tb_error_clear(&err);
  json_decref(j);
  ASSERT_ERR(tb_tokenizer_load_dir("/nonexistent", &t, &err), TB_ENOENT);
  ASSERT_STR_CONTAINS(tb_error_message(&err), "/nonexistent/tokenizer.json");
  tb_error_clear(&err);
}

TEST(bad_text_and_ids_are_refused) {
  tb_tokenizer_t *t = small();
  int32_t *ids;
  size_t n;
  tb_error_t err = { 0 };
  ASSERT_ERR(tb_tokenizer_encode(t, "ab\xff", 3, 0, &ids, NULL, &n, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(tb_error_message(&err), "text: invalid UTF-8 at byte 2");
  tb_error_clear(&err);
  ASSERT_ERR(tb_tokenizer_encode(t, "\xed\xa0\x80", 3, 0, &ids, NULL, &n, &err), TB_EINVAL);
  tb_error_clear(&err);
  /* a megabyte of spaces and of one letter: the pattern and the heap
   * merge stay linear */
  size_t big = 1 << 20;
  char *s = malloc(big);
  memset(s, ' ', big);
  ASSERT_OK(tb_tokenizer_encode(t, s, big, 0, &ids, NULL, &n, &err));
  free(ids);
  memset(s, 'l', big);
  ASSERT_OK(tb_tokenizer_encode(t, s, big, 0, &ids, NULL, &n, &err));
  ASSERT_EQ_INT(n, big / 2);
  free(ids);
  free(s);
  tb_tokenizer_free(t);
}

TEST(renderers_refuse_what_they_cannot_render) {
  tb_tokenizer_t *t = small();
  tb_renderer_t *r;
  tb_error_t err = { 0 };
  ASSERT_ERR(tb_renderer_new("qwen3", t, &r, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(tb_error_message(&err), "renderer qwen3: the tokenizer");
  ASSERT_STR_CONTAINS(tb_error_message(&err), "has no token <|im_start|>");
  tb_error_clear(&err);
  ASSERT_ERR(tb_renderer_new("vicuna", t, &r, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(tb_error_message(&err), "\"vicuna\" is not one of llama3, qwen3");
  tb_error_clear(&err);
  /* An unknown chat template names the file and field and the names. */
  const char *name;
  ASSERT_ERR(tb_renderer_detect_buffers(NULL, 0, small_config, strlen(small_config),
                                        "m/tokenizer_config.json", &name, &err),
             TB_EINVAL);
  ASSERT_STR_CONTAINS(tb_error_message(&err), "m/tokenizer_config.json: chat_template: not a "
                                              "template any renderer is known to reproduce");
  ASSERT_STR_CONTAINS(tb_error_message(&err), "--renderer (llama3, qwen3, "
                                              "qwen3_disable_thinking, chatml, role_colon, base)");
  tb_error_clear(&err);
  ASSERT_ERR(tb_renderer_detect_buffers(NULL, 0, "{}", 2, NULL, &name, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(tb_error_message(&err), "tokenizer_config.json: chat_template: missing");
  tb_error_clear(&err);
  ASSERT_ERR(tb_renderer_detect("/nonexistent", &name, &err), TB_ENOENT);
  tb_error_clear(&err);
  /* role_colon works with any tokenizer; an unknown role is refused. */
  ASSERT_OK(tb_renderer_new("role_colon", t, &r, &err));
  tb_chat_message_t bad[] = { { "user", "hi", NULL, 0 }, { "tool", "x", NULL, 0 } };
  tb_rendered_t out;
  ASSERT_ERR(tb_renderer_render(r, bad, 2, 0, &out, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(tb_error_message(&err),
                      "messages[1].role: \"tool\" is not one of system, user, assistant");
  tb_error_clear(&err);
  tb_chat_message_t chat[] = { { "user", "hello", NULL, 0 }, { "assistant", "hello w", NULL, 0 } };
  ASSERT_OK(tb_renderer_render(r, chat, 2, 0, &out, &err));
  ASSERT_STR_EQ(out.text, "<|bos|>User: hello\n\nAssistant: hello w\n\nUser:");
  tb_stop_t stop;
  tb_renderer_stop(r, &stop);
  ASSERT_EQ_INT(stop.n_strings, 1);
  ASSERT_STR_EQ(stop.strings[0], "\n\nUser:");
  /* what is weighted decodes to " hello w\n\nUser:" */
  size_t first = 0;
  while (first < out.len && out.weights[first] == 0)
    first++;
  char *text;
  size_t len;
  ASSERT_OK(tb_tokenizer_decode(t, out.tokens + first, out.len - first, 0, &text, &len, &err));
  ASSERT_STR_EQ(text, " hello w\n\nUser:");
  free(text);
  /* and the reply parses back, stopping at the stop string */
  tb_reply_t reply;
  ASSERT_OK(tb_renderer_parse(r, out.tokens + first, out.len - first, &reply, &err));
  ASSERT_STR_EQ(reply.content, "hello w");
  ASSERT(reply.ended);
  tb_reply_free(&reply);
  tb_rendered_free(&out);
  tb_renderer_free(r);
  tb_tokenizer_free(t);
}

/* role_colon strips a reply as Python's str.strip() does, by character:
 * U+3000 is whitespace, and the last byte of 你 (0xA0, which as a
 * code point would be U+00A0) is not a character of its own. */
TEST(role_colon_strips_characters_not_bytes) {
  tb_tokenizer_t *t;
  ASSERT_OK(tb_tokenizer_base(&t));
  tb_renderer_t *r;
  tb_error_t err = { 0 };
  ASSERT_OK(tb_renderer_new("role_colon", t, &r, &err));
  static const char *const replies[][2] = {
    { " \xe4\xbd\xa0\xe5\xa5\xbd\xe3\x80\x80 \n", "\xe4\xbd\xa0\xe5\xa5\xbd" },
    { "\xe4\xbd\xa0", "\xe4\xbd\xa0" },
    { "\xc2\xa0x\xc2\x85", "x" },
  };
  for (size_t i = 0; i < sizeof(replies) / sizeof(replies[0]); i++) {
    int32_t *ids;
    size_t n;
    ASSERT_OK(tb_tokenizer_encode(t, replies[i][0], strlen(replies[i][0]), 0, &ids, NULL, &n,
                                  &err));
    tb_reply_t reply;
    ASSERT_OK(tb_renderer_parse(r, ids, n, &reply, &err));
    ASSERT_STR_EQ(reply.content, replies[i][1]);
    ASSERT_EQ_INT(reply.content_len, strlen(replies[i][1]));
    tb_reply_free(&reply);
    free(ids);
  }
  tb_renderer_free(r);
  tb_tokenizer_free(t);
}

TEST_LIST(
  TEST_ENTRY(bpe_merges_by_rank),
  TEST_ENTRY(added_tokens_and_their_flags),
  TEST_ENTRY(post_processor_adds_bos_once),
  TEST_ENTRY(offsets_cover_the_text),
  TEST_ENTRY(streaming_decode_holds_half_characters),
  TEST_ENTRY(threads_share_one_tokenizer),
  TEST_ENTRY(digits_and_byte_level_pattern),
  TEST_ENTRY(generation_config_ids),
  TEST_ENTRY(normalized_added_tokens_and_byte_fallback),
  TEST_ENTRY(other_models_and_parts_are_refused),
  TEST_ENTRY(truncated_and_corrupt_files_are_refused),
  TEST_ENTRY(bad_text_and_ids_are_refused),
  TEST_ENTRY(renderers_refuse_what_they_cannot_render),
  TEST_ENTRY(role_colon_strips_characters_not_bytes),
)
