/*
 * The inside of tb_tokenizer_t, shared by the files of src/text/: the
 * loader (tok_load.c, tok_json.c), the BPE model and its word cache
 * (tok_bpe.c), encoding (tok_encode.c), decoding (tok_decode.c) and the
 * byte tokenizer of `base` (tok_base.c).
 *
 * Tokens are kept twice: as the file spells them (`text`: "Ġhello",
 * "<|im_end|>"), for token<->id, and as the bytes they stand for (`bytes`:
 * " hello"), which BPE and decoding work on, so no text is ever mapped to
 * the byte-level alphabet and back while encoding.
 */
#ifndef TB_TEXT_TOK_INTERNAL_H
#define TB_TEXT_TOK_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/buf.h"
#include "tinkerbell/error.h"
#include "tinkerbell/tokenizer.h"

/* Limits checked before anything is allocated from a file's numbers. */
#define TB__TOK_MAX_IDS (1u << 24)         /* ids must be below this */
#define TB__TOK_MAX_FILE ((size_t)1 << 30) /* tokenizer.json bytes */
#define TB__TOK_MAX_TOKEN 65536u           /* bytes of one token */
#define TB__TOK_MAX_STEPS 16               /* normalizers, pre-tokenizers */

enum { TB__TOK_BPE = 1, TB__TOK_BYTES = 2 };

/* Per-id flags. */
enum {
  TB__ID_PRESENT = 1,
  TB__ID_ADDED = 2,   /* an added token: matched in text before BPE */
  TB__ID_SPECIAL = 4, /* skipped by TB_DECODE_SKIP_SPECIAL */
  TB__ID_MODEL = 8    /* in model.vocab */
};

typedef struct tb__span32_s {
  uint32_t off;
  uint32_t len;
} tb__span32_t;

/* An open-addressing hash of byte strings (in a blob) to ids. */
typedef struct tb__strhash_slot_s {
  uint32_t hash; /* of the string, so most misses need no look at it */
  uint32_t id1;  /* id + 1, 0 = empty */
} tb__strhash_slot_t;

typedef struct tb__strhash_s {
  tb__strhash_slot_t *slots;
  uint64_t mask;
} tb__strhash_t;

/* The merge table: (left id, right id) -> rank and merged id. */
typedef struct tb__pair_entry_s {
  uint64_t key; /* (left << 32 | right) + 1; 0 = empty */
  uint32_t rank;
  int32_t merged;
} tb__pair_entry_t;

typedef struct tb__pairhash_s {
  tb__pair_entry_t *slots;
  uint64_t mask;
} tb__pairhash_t;

/* The bounded cache of encoded words: direct-mapped slots in shards, each
 * shard behind its own lock, so threads that encode at once meet only
 * when they touch the same shard.  Words longer than TB__CACHE_KEY bytes
 * or of more than TB__CACHE_IDS tokens are not kept. */
#define TB__CACHE_SHARDS 64
#define TB__CACHE_SLOTS 512 /* per shard: 32768 words in all */
#define TB__CACHE_KEY 22
#define TB__CACHE_IDS 9
/* One cache line: a hit loads one line. */
typedef struct tb__cache_slot_s {
  uint32_t hash;
  uint8_t klen; /* 0 = empty */
  uint8_t nids;
  char key[TB__CACHE_KEY];
  int32_t ids[TB__CACHE_IDS];
} __attribute__((aligned(64))) tb__cache_slot_t;

typedef struct tb__cache_shard_s {
  pthread_mutex_t lock;
  tb__cache_slot_t *slots;
} tb__cache_shard_t;

enum { TB__NORM_NFC = 1, TB__NORM_NFD, TB__NORM_NFKC, TB__NORM_NFKD };

enum { TB__PRE_SPLIT = 1, TB__PRE_BYTELEVEL, TB__PRE_DIGITS };

typedef struct tb__pretok_s {
  int kind;
  pcre2_code *re;     /* SPLIT, and BYTELEVEL with use_regex */
  int jit;            /* re was JIT-compiled: match with pcre2_jit_match */
  int removed;        /* SPLIT: behavior Removed (else Isolated) */
  int invert;         /* SPLIT */
  int prefix_space;   /* BYTELEVEL: add_prefix_space */
  int individual;     /* DIGITS: individual_digits */
} tb__pretok_t;

/* A trie of added tokens' text, for the longest match at a position. */
typedef struct tb__trie_node_s {
  uint32_t child;   /* first child, 0 = none */
  uint32_t sibling; /* next sibling, 0 = none */
  int32_t id;       /* index in added[] of the token ending here, or -1 */
  uint8_t byte;
} tb__trie_node_t;

typedef struct tb__trie_s {
  tb__trie_node_t *nodes; /* [0] is the root */
  uint32_t len, cap;
  uint8_t first[32];      /* bitset of first bytes */
} tb__trie_t;

typedef struct tb__added_s {
  int32_t id;
  uint8_t lstrip, rstrip, single_word, normalized, special;
} tb__added_t;

struct tb_tokenizer_s {
  int kind;
  char *name; /* tokenizer.json's name, for messages */

  /* Ids and their strings. */
  uint32_t n_ids;
  uint8_t *flags;          /* n_ids */
  tb__span32_t *text;      /* n_ids, into blob */
  tb__span32_t *bytes;     /* n_ids, into blob */
  char *blob;
  size_t blob_len, blob_cap;
  tb__strhash_t by_text;   /* every token by its spelling */
  tb__strhash_t by_bytes;  /* model tokens by their bytes */
  tb__pairhash_t merges;
  int32_t byte_id[256];    /* the token of each single byte, or -1 */
  int32_t fallback_id[256];/* byte_fallback: <0xXX>, or -1 */
  int32_t unk_id;
  int ignore_merges;
  int byte_fallback;

  int norm[TB__TOK_MAX_STEPS];
  size_t n_norm;
  tb__pretok_t pre[TB__TOK_MAX_STEPS];
  size_t n_pre;

  tb__added_t *added;      /* sorted by id */
  size_t n_added;
  tb__trie_t trie_raw;     /* added tokens matched on the text as given */
  tb__trie_t trie_norm;    /* those matched after normalization */
  int has_norm_added;

  /* TemplateProcessing's `single`: ids before and after the sequence. */
  int32_t *post_before, *post_after;
  size_t n_post_before, n_post_after;

  int32_t bos, eos, pad;
  int32_t *eos_ids;
  size_t n_eos_ids;

  tb__cache_shard_t *cache; /* TB__CACHE_SHARDS, or NULL */
};

/* --- tok_bpe.c */
uint32_t tb__tok_hash(const void *p, size_t n);
int tb__strhash_init(tb__strhash_t *h, size_t n);
void tb__strhash_free(tb__strhash_t *h);
/* Inserts id for the string spans[id] of blob; an equal string already
 * there keeps its id unless replace. */
void tb__strhash_put(tb__strhash_t *h, const char *blob, const tb__span32_t *spans,
                     int32_t id, int replace);
int32_t tb__strhash_get(const tb__strhash_t *h, const char *blob, const tb__span32_t *spans,
                        const void *key, size_t n);
void tb__strhash_put_hashed(tb__strhash_t *h, const char *blob, const tb__span32_t *spans,
                            int32_t id, uint32_t hv, int replace);
void tb__strhash_prefetch(const tb__strhash_t *h, uint32_t hv);
/* Many lookups at once, their memory loads overlapped: q[i].id is the
 * id of q[i].key or -1. */
typedef struct tb__lookup_s {
  const char *key;
  uint32_t n;
  uint32_t hash;
  int32_t id;
} tb__lookup_t;
void tb__strhash_get_many(const tb__strhash_t *h, const char *blob, const tb__span32_t *spans,
                          tb__lookup_t *q, size_t n);
void tb__pairhash_prefetch(const tb__pairhash_t *h, int32_t a, int32_t b);
int tb__pairhash_init(tb__pairhash_t *h, size_t n);
void tb__pairhash_free(tb__pairhash_t *h);
/* 0, or 1 when the pair was there already (the first rank stays). */
int tb__pairhash_put(tb__pairhash_t *h, int32_t a, int32_t b, uint32_t rank, int32_t merged);
int tb__cache_init(tb_tokenizer_t *t);
void tb__cache_free(tb_tokenizer_t *t);

/* Appends to out the ids of one pre-tokenized word (raw bytes), with
 * offsets of each token relative to the word when offs is not NULL.  The
 * scratch buffers are the caller's, reused across words. */
typedef struct tb__ids_s {
  int32_t *ids;
  size_t *offs; /* 2 per id, or NULL when not wanted */
  size_t len, cap;
  int want_offs;
} tb__ids_t;

int tb__ids_push(tb__ids_t *o, int32_t id, size_t start, size_t end);
void tb__ids_free(tb__ids_t *o);

typedef struct tb__bpe_scratch_s {
  int32_t *sym;  /* ids of the current symbols */
  uint32_t *pos; /* byte start of each symbol */
  uint32_t *len; /* byte length of each symbol */
  uint32_t *link; /* the heap merge's next and prev lists, 2 * cap */
  size_t cap;
  struct tb__heap_s *heap;
  size_t heap_cap;
} tb__bpe_scratch_t;

int tb__bpe_word(const tb_tokenizer_t *t, const char *w, size_t n, size_t base,
                 tb__bpe_scratch_t *s, tb__ids_t *out);
/* The same with the word's hash (tb__tok_hash) already taken. */
int tb__bpe_word_hashed(const tb_tokenizer_t *t, const char *w, size_t n, size_t base,
                        uint32_t h, tb__bpe_scratch_t *s, tb__ids_t *out);
/* Starts loading the cache slot of a word's hash. */
void tb__cache_prefetch(const tb_tokenizer_t *t, uint32_t h);
void tb__bpe_scratch_free(tb__bpe_scratch_t *s);

/* --- tok_json.c: a strict JSON scanner for the vocabulary and merges,
 * which are most of a tokenizer.json and too slow to build as a jansson
 * tree (a 150k-token file took ~350 ms in jansson alone). */
typedef struct tb__jscan_s {
  const char *p, *end, *start;
  tb__buf_t str; /* the last string read, unescaped */
} tb__jscan_t;

void tb__jscan_ws(tb__jscan_t *s);
/* Reads a string into s->str; 0 or TB_EINVAL. */
int tb__jscan_string(tb__jscan_t *s);
/* Skips one value of any kind (depth-limited); 0 or TB_EINVAL. */
int tb__jscan_skip(tb__jscan_t *s, int depth);
/* Reads an integer; 0 or TB_EINVAL (a fraction, exponent or overflow). */
int tb__jscan_int(tb__jscan_t *s, long long *v);
/* Expects byte c after whitespace; 0 or TB_EINVAL. */
int tb__jscan_expect(tb__jscan_t *s, char c);

/* --- tok_load.c */
int tb__tok_add_string(tb_tokenizer_t *t, const void *p, size_t n, tb__span32_t *out);
int tb__tok_fail(tb_error_t *err, const char *file, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* --- tok_encode.c */
/* Encodes text with the spans (sorted pairs of byte offsets, n_plain of
 * them) in which special tokens are plain text.  Used by the renderers. */
int tb__tok_encode_spans(const tb_tokenizer_t *t, const char *text, size_t len, int flags,
                         const size_t *plain, size_t n_plain, tb__ids_t *out, tb_error_t *err);
/* Byte offset of the first invalid UTF-8 sequence, or len. */
size_t tb__utf8_valid_prefix(const char *s, size_t len);
/* Appends bytes to out with every invalid UTF-8 sequence replaced by
 * U+FFFD, maximal subparts as Rust's from_utf8_lossy and WHATWG do. */
int tb__utf8_lossy_append(tb__buf_t *out, const char *s, size_t len);
/* Length of the longest prefix of s that is a proper prefix of a valid
 * UTF-8 character at its end: the bytes a streaming decoder holds back. */
size_t tb__utf8_incomplete_tail(const char *s, size_t len);

/* --- tok_base.c */
int tb__tok_base_new(tb_tokenizer_t **out);
extern const char *const tb__tok_base_special_names[16];

#endif /* TB_TEXT_TOK_INTERNAL_H */
