/*
 * AdamW's defaults (Tinker's AdamParams, wire protocol §5.6), in one
 * place for the public API's tb_adamw_params_default (doubles) and the
 * engine's tb__adam_params_default (floats).  Not for: checking values
 * (engine/optim.h's tb__adam_values_validate does).
 */
#ifndef TB_CORE_ADAMW_H
#define TB_CORE_ADAMW_H

#define TB__ADAMW_LEARNING_RATE 1e-4
#define TB__ADAMW_BETA1 0.9
#define TB__ADAMW_BETA2 0.95
#define TB__ADAMW_EPS 1e-12
#define TB__ADAMW_WEIGHT_DECAY 0.0   /* decoupled, as AdamW */
#define TB__ADAMW_GRAD_CLIP_NORM 0.0 /* no clipping */

/* Sets the six fields of *p, a struct with fields of type T. */
#define TB__ADAMW_SET_DEFAULTS(p, T)                   \
  do {                                                 \
    (p)->learning_rate = (T)TB__ADAMW_LEARNING_RATE;   \
    (p)->beta1 = (T)TB__ADAMW_BETA1;                   \
    (p)->beta2 = (T)TB__ADAMW_BETA2;                   \
    (p)->eps = (T)TB__ADAMW_EPS;                       \
    (p)->weight_decay = (T)TB__ADAMW_WEIGHT_DECAY;     \
    (p)->grad_clip_norm = (T)TB__ADAMW_GRAD_CLIP_NORM; \
  } while (0)

#endif /* TB_CORE_ADAMW_H */
