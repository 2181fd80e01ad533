/*
 * core/idmap: the intrusive string-keyed hash map the server's sessions,
 * futures and store indexes share.
 */
#include "tb_test.h"

#include "core/idmap.h"

typedef struct item_s {
  int value;
  tb__idmap_link_t link;
  int seen;
  size_t len;
  char key[72];
} item_t;

static item_t *item_of(tb__idmap_link_t *l) {
  return l ? TB__IDMAP_ENTRY(l, item_t, link) : NULL;
}

static item_t *find(const tb__idmap_t *m, const char *key, size_t len) {
  return item_of(tb__idmap_find(m, key, len));
}

/* Ids the way the server makes them: a prefix and a number. */
static item_t *make_items(size_t n) {
  item_t *items = xmalloc(n * sizeof(*items));
  memset(items, 0, n * sizeof(*items));
  for (size_t i = 0; i < n; i++) {
    items[i].value = (int)i;
    items[i].len = (size_t)snprintf(items[i].key, sizeof(items[i].key), "req-%zu", i);
  }
  return items;
}

/* Every link is reached once by a walk, and the walk's count is m->n. */
static size_t walk_count(const tb__idmap_t *m) {
  size_t n = 0;
  for (tb__idmap_link_t *l = tb__idmap_first(m); l != NULL; l = tb__idmap_next(m, l)) {
    item_t *it = item_of(l);
    ASSERT_EQ_INT(it->seen, 0);
    it->seen = 1;
    n++;
  }
  for (tb__idmap_link_t *l = tb__idmap_first(m); l != NULL; l = tb__idmap_next(m, l))
    item_of(l)->seen = 0;
  return n;
}

TEST(empty_map_finds_nothing) {
  tb__idmap_t m = TB__IDMAP_INIT;
  ASSERT(tb__idmap_find(&m, "sess-1", 6) == NULL);
  ASSERT(tb__idmap_find(&m, "", 0) == NULL);
  ASSERT(tb__idmap_first(&m) == NULL);
  tb__idmap_free(&m);
  ASSERT(m.buckets == NULL);
}

TEST(grows_and_finds_every_entry) {
  enum { N = 20000 };
  item_t *items = make_items(N);
  tb__idmap_t m;
  tb__idmap_init(&m);
  size_t grew = 0, last = 0;
  for (size_t i = 0; i < N; i++) {
    ASSERT(find(&m, items[i].key, items[i].len) == NULL);
    ASSERT_OK(tb__idmap_insert(&m, &items[i].link, items[i].key, items[i].len));
    ASSERT_EQ_INT(m.n, i + 1);
    /* Doubling keeps the load at two entries a bucket at the most. */
    ASSERT_LE(m.n, m.n_buckets * 2 + 1);
    ASSERT_EQ_INT(m.n_buckets & (m.n_buckets - 1), 0);
    grew += m.n_buckets != last;
    last = m.n_buckets;
  }
  ASSERT_GE(grew, 8);  /* 64 buckets first, 16384 at the end */
  ASSERT_EQ_INT(m.n_buckets, 16384);
  for (size_t i = 0; i < N; i++)
    ASSERT(find(&m, items[i].key, items[i].len) == &items[i]);
  ASSERT(find(&m, "req-20000", 9) == NULL);
  ASSERT(find(&m, "req-1", 4) == NULL);  /* a prefix of a key */
  ASSERT_EQ_INT(walk_count(&m), N);
  tb__idmap_free(&m);
  ASSERT_EQ_INT(m.n, 0);
  ASSERT(tb__idmap_find(&m, items[0].key, items[0].len) == NULL);
  free(items);
}

/* 128 keys in the first 64 buckets share chains; removing from the head,
 * the middle and the tail of chains leaves the others found. */
TEST(shared_buckets_and_removal) {
  enum { N = 128 };
  item_t *items = make_items(N);
  tb__idmap_t m = TB__IDMAP_INIT;
  for (size_t i = 0; i < N; i++)
    ASSERT_OK(tb__idmap_insert(&m, &items[i].link, items[i].key, items[i].len));
  ASSERT_EQ_INT(m.n_buckets, 64);
  size_t longest = 0;
  for (size_t b = 0; b < m.n_buckets; b++) {
    size_t len = 0;
    for (tb__idmap_link_t *l = m.buckets[b]; l != NULL; l = l->next)
      len++;
    longest = len > longest ? len : longest;
  }
  ASSERT_GE(longest, 2);
  for (size_t i = 0; i < N; i += 3)
    tb__idmap_remove(&m, &items[i].link);
  for (size_t i = 0; i < N; i++)
    ASSERT(find(&m, items[i].key, items[i].len) == (i % 3 ? &items[i] : NULL));
  ASSERT_EQ_INT(m.n, N - (N + 2) / 3);
  ASSERT_EQ_INT(walk_count(&m), m.n);
  /* A removed entry goes back in. */
  ASSERT_OK(tb__idmap_insert(&m, &items[0].link, items[0].key, items[0].len));
  ASSERT(find(&m, "req-0", 5) == &items[0]);
  tb__idmap_free(&m);
  free(items);
}

/* The walk survives removing (and freeing) the entry it stands on. */
TEST(removal_during_iteration) {
  enum { N = 1000 };
  tb__idmap_t m = TB__IDMAP_INIT;
  for (int i = 0; i < N; i++) {
    item_t *it = xmalloc(sizeof(*it));
    memset(it, 0, sizeof(*it));
    it->value = i;
    it->len = (size_t)snprintf(it->key, sizeof(it->key), "sess-%d", i);
    ASSERT_OK(tb__idmap_insert(&m, &it->link, it->key, it->len));
  }
  /* First pass: drop the odd values, keep the even. */
  size_t visited = 0;
  for (tb__idmap_link_t *l = tb__idmap_first(&m), *next; l != NULL; l = next) {
    next = tb__idmap_next(&m, l);
    item_t *it = item_of(l);
    visited++;
    if (it->value % 2) {
      tb__idmap_remove(&m, l);
      memset(it, 0xa5, sizeof(*it));
      free(it);
    }
  }
  ASSERT_EQ_INT(visited, N);
  ASSERT_EQ_INT(m.n, N / 2);
  for (int i = 0; i < N; i++) {
    char key[32];
    size_t len = (size_t)snprintf(key, sizeof(key), "sess-%d", i);
    item_t *it = find(&m, key, len);
    ASSERT(i % 2 ? it == NULL : it != NULL && it->value == i);
  }
  /* Second pass: empty it the way a store frees everything it holds. */
  visited = 0;
  for (tb__idmap_link_t *l = tb__idmap_first(&m), *next; l != NULL; l = next) {
    next = tb__idmap_next(&m, l);
    tb__idmap_remove(&m, l);
    free(item_of(l));
    visited++;
  }
  ASSERT_EQ_INT(visited, N / 2);
  ASSERT_EQ_INT(m.n, 0);
  ASSERT(tb__idmap_first(&m) == NULL);
  tb__idmap_free(&m);
}

/* Keys of every length from 0 to 64, bytes of any value (NUL too): keys
 * that are prefixes of each other and keys that differ only in their last
 * byte are told apart. */
TEST(keys_of_every_length) {
  enum { MAXLEN = 64 };
  static item_t items[2][MAXLEN + 1];
  tb__idmap_t m = TB__IDMAP_INIT;
  for (int v = 0; v < 2; v++)
    for (size_t len = 0; len <= MAXLEN; len++) {
      item_t *it = &items[v][len];
      for (size_t i = 0; i < len; i++)
        it->key[i] = (char)(i % 7 == 3 ? 0 : 'a' + i % 26);
      if (len > 0)
        it->key[len - 1] = (char)(v ? 0xff : 'Z');
      it->len = len;
      it->value = v;
      if (v == 1 && len == 0)
        continue;  /* only one empty key */
      ASSERT(find(&m, it->key, len) == NULL);
      ASSERT_OK(tb__idmap_insert(&m, &it->link, it->key, len));
    }
  ASSERT_EQ_INT(m.n, 2 * (MAXLEN + 1) - 1);
  for (int v = 0; v < 2; v++)
    for (size_t len = v; len <= MAXLEN; len++) {
      const item_t *it = &items[v][len];
      ASSERT(find(&m, it->key, len) == it);
      ASSERT_EQ_INT(find(&m, it->key, len)->len, len);
    }
  /* Same bytes, one longer or shorter: not found unless that key exists. */
  char longer[MAXLEN + 2];
  memcpy(longer, items[0][MAXLEN].key, MAXLEN);
  longer[MAXLEN] = 'Z';
  ASSERT(find(&m, longer, MAXLEN + 1) == NULL);
  ASSERT(find(&m, "", 0) == &items[0][0]);
  tb__idmap_remove(&m, &items[0][0].link);
  ASSERT(find(&m, "", 0) == NULL);
  ASSERT(find(&m, items[1][1].key, 1) == &items[1][1]);
  tb__idmap_free(&m);
}

TEST(hash_is_fnv1a) {
  /* The published FNV-1a 64 test vectors. */
  ASSERT(tb__idmap_hash("", 0) == 0xcbf29ce484222325ULL);
  ASSERT(tb__idmap_hash("a", 1) == 0xaf63dc4c8601ec8cULL);
  ASSERT(tb__idmap_hash("foobar", 6) == 0x85944171f73967e8ULL);
}

TEST_LIST(
  TEST_ENTRY(empty_map_finds_nothing),
  TEST_ENTRY(grows_and_finds_every_entry),
  TEST_ENTRY(shared_buckets_and_removal),
  TEST_ENTRY(removal_during_iteration),
  TEST_ENTRY(keys_of_every_length),
  TEST_ENTRY(hash_is_fnv1a),
)
