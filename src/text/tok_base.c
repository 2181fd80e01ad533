/*
 * The byte tokenizer of the built-in `base` model (text/base_vocab.h has
 * its ids), as a tb_tokenizer_t: a token per byte, and special tokens
 * that are matched in text like any tokenizer's added tokens (unless
 * TB_ENCODE_SPECIAL_AS_TEXT), so every tokenizer of the project behaves
 * alike.  Its decode gives bytes as they are: any byte string round
 * trips, valid UTF-8 or not.
 */
#include <stdlib.h>
#include <string.h>

#include "text/base_vocab.h"
#include "text/tok_config.h"
#include "text/tok_internal.h"

const char *const tb__tok_base_special_names[TB_TOK_VOCAB - TB_TOK_BYTES] = {
  "<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>",
  "<|end|>", "<|pad|>", "<|reserved_0|>", "<|reserved_1|>",
  "<|reserved_2|>", "<|reserved_3|>", "<|reserved_4|>", "<|reserved_5|>",
  "<|reserved_6|>", "<|reserved_7|>", "<|reserved_8|>",
};

int tb__tok_base_new(tb_tokenizer_t **out) {
  *out = NULL;
  tb_tokenizer_t *t = calloc(1, sizeof(*t));
  if (t == NULL)
    return TB_ENOMEM;
  t->kind = TB__TOK_BYTES;
  t->name = strdup("base");
  t->n_ids = TB_TOK_VOCAB;
  t->flags = calloc(t->n_ids, 1);
  t->text = calloc(t->n_ids, sizeof(*t->text));
  t->bytes = calloc(t->n_ids, sizeof(*t->bytes));
  t->added = calloc(TB_TOK_VOCAB - TB_TOK_BYTES, sizeof(*t->added));
  int rc = t->name && t->flags && t->text && t->bytes && t->added ? 0 : TB_ENOMEM;
  if (rc == 0)
    rc = tb__strhash_init(&t->by_text, t->n_ids);
  for (int b = 0; rc == 0 && b < TB_TOK_BYTES; b++) {
    char c = (char)b;
    rc = tb__tok_add_string(t, &c, 1, &t->text[b]);
    t->bytes[b] = t->text[b];
    t->flags[b] = TB__ID_PRESENT | TB__ID_MODEL;
    t->byte_id[b] = b;
    t->fallback_id[b] = -1;
  }
  for (int i = 0; rc == 0 && i < TB_TOK_VOCAB - TB_TOK_BYTES; i++) {
    int id = TB_TOK_BYTES + i;
    rc = tb__tok_add_string(t, tb__tok_base_special_names[i], strlen(tb__tok_base_special_names[i]), &t->text[id]);
    t->bytes[id] = t->text[id];
    t->flags[id] = TB__ID_PRESENT | TB__ID_ADDED | TB__ID_SPECIAL;
    t->added[t->n_added++] = (tb__added_t){ id, 0, 0, 0, 0, 1 };
    if (rc == 0)
      rc = tb__trie_add(&t->trie_raw, tb__tok_base_special_names[i], strlen(tb__tok_base_special_names[i]), i);
  }
  for (int id = 0; rc == 0 && id < TB_TOK_VOCAB; id++)
    tb__strhash_put(&t->by_text, t->blob, t->text, id, 0);
  t->unk_id = -1;
  t->bos = TB_TOK_BOS;
  t->eos = TB_TOK_EOS;
  t->pad = TB_TOK_PAD;
  if (rc == 0) {
    t->eos_ids = malloc(sizeof(*t->eos_ids));
    rc = t->eos_ids ? 0 : TB_ENOMEM;
  }
  if (rc == 0) {
    t->eos_ids[0] = TB_TOK_EOS;
    t->n_eos_ids = 1;
  }
  if (rc != 0) {
    tb_tokenizer_free(t);
    return TB_ENOMEM;
  }
  *out = t;
  return 0;
}

int tb_tokenizer_base(tb_tokenizer_t **out) {
  return tb__tok_base_new(out);
}
