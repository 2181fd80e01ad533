/*
 * The linear layers a LoRA adapter can target, shared by the adapter
 * layout (lora.h) and the checkpoint names (checkpoint.h).
 */
#ifndef TB_ENGINE_LORA_TARGET_H
#define TB_ENGINE_LORA_TARGET_H

typedef enum {
  TB_LORA_Q = 0,
  TB_LORA_K,
  TB_LORA_V,
  TB_LORA_O,
  TB_LORA_GATE,
  TB_LORA_UP,
  TB_LORA_DOWN,
  TB_LORA_UNEMBED,  /* lm_head */
  TB_LORA_NTARGETS
} tb__lora_target_t;

/* The targets inside each decoder layer come first: q .. down. */
#define TB_LORA_LAYER_TARGETS TB_LORA_UNEMBED

#endif /* TB_ENGINE_LORA_TARGET_H */
