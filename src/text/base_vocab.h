/*
 * The vocabulary of the built-in `base` model (272 ids):
 *   0..255    one token per byte value
 *   256       <|bos|>        start of a document
 *   257       <|eos|>        end of a plain-text document
 *   258       <|system|>     role headers of the chat template
 *   259       <|user|>
 *   260       <|assistant|>
 *   261       <|end|>        end of one chat message
 *   262       <|pad|>
 *   263..271  <|reserved_0|> .. <|reserved_8|> (never produced)
 * The tokenizer is tok_base.c, its chat template the `base` renderer
 * (render_base.c).  The engine sizes the generated model by these ids.
 */
#ifndef TB_TEXT_BASE_VOCAB_H
#define TB_TEXT_BASE_VOCAB_H

enum {
  TB_TOK_BYTES = 256,
  TB_TOK_BOS = 256,
  TB_TOK_EOS = 257,
  TB_TOK_SYSTEM = 258,
  TB_TOK_USER = 259,
  TB_TOK_ASSISTANT = 260,
  TB_TOK_END = 261,
  TB_TOK_PAD = 262,
  TB_TOK_RESERVED0 = 263,
  TB_TOK_VOCAB = 272
};

#endif /* TB_TEXT_BASE_VOCAB_H */
