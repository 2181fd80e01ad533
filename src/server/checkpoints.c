/*
 * The checkpoints of the Tinker dialect as its routes name them: a
 * tinker://<model_id>/<kind>/<name> path checked and turned into the
 * directory under data_dir the caller may read (tb__checkpoint_dir), and
 * a checkpoint's LoRA shape, from the model that made it while that is
 * loaded (tb__checkpoint_lora) or from its files on the threadpool
 * (tb__read_checkpoint_lora).
 *
 * Not here: writing checkpoints (the engine, through training.c), their
 * records (store.c).
 */
#include "server/training.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "engine/checkpoint.h"
#include "server/store.h"

int tb__checkpoint_check_name(tb__jctx_t *c, tb_slice_t name) {
  int ok = name.len > 0 && name.len <= 128 && name.base[0] != '.';
  for (size_t i = 0; ok && i < name.len; i++) {
    char ch = name.base[i];
    ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '.' || ch == '_' || ch == '-';
  }
  return ok ? 0 : tb__jctx_fail_at(c, "path", "expected a name of 1 to 128 letters, digits, "
                                                "'.', '_' or '-', not starting with '.'");
}

char *tb__checkpoint_dir(tb__http_request_t *req, const char *field, tb_slice_t path) {
  tb__training_t *tr = tb__training_of(req);
  static const char scheme[] = "tinker://";
  size_t sl = sizeof(scheme) - 1;
  const char *p = path.base, *end = path.base + path.len;
  const char *s1 = path.len > sl && memcmp(p, scheme, sl) == 0 ? memchr(p + sl, '/', path.len - sl)
                                                                : NULL;
  const char *s2 = s1 ? memchr(s1 + 1, '/', (size_t)(end - s1 - 1)) : NULL;
  tb_slice_t mid = { p + sl, s1 ? (size_t)(s1 - p - sl) : 0 };
  tb_slice_t kind = { s1 ? s1 + 1 : NULL, s2 ? (size_t)(s2 - s1 - 1) : 0 };
  tb_slice_t name = { s2 ? s2 + 1 : NULL, s2 ? (size_t)(end - s2 - 1) : 0 };
  tb_error_t err = { 0 };
  tb__jctx_t c;
  tb__jctx_init(&c, &err);
  int rc = 0;
  if (s2 == NULL || mid.len == 0 ||
      !(tb__slice_eq_str(kind, "weights") || tb__slice_eq_str(kind, "sampler_weights")))
    rc = tb__jctx_fail_at(&c, field, "expected tinker://<model_id>/weights/<name> or "
                                     "tinker://<model_id>/sampler_weights/<name>");
  rc = rc < 0 ? rc : tb__checkpoint_check_name(&c, name);
  if (rc >= 0 && tr->srv->opts.data_dir == NULL)
    rc = tb__jctx_fail(&c, "this server keeps no checkpoints (no data_dir)");
  for (size_t i = 0; rc >= 0 && i < mid.len; i++)
    if (mid.base[i] == '.' && i == 0)
      rc = tb__jctx_fail(&c, "invalid model id");
  if (rc < 0) {
    tb__server_respond_bad(req, &err);
    tb_error_clear(&err);
    return NULL;
  }
  /* Checkpoints belong to the user whose session made the model. */
  const char *colon = memchr(mid.base, ':', mid.len);
  tb_slice_t sid = { mid.base, colon ? (size_t)(colon - mid.base) : mid.len };
  /* Or, by the database, to the run's owner; public ones to everyone. */
  int may = tb__session_find(&tr->srv->sessions, tb__sreq(req)->user, sid) != NULL
                ? 1
                : tb__store_may_read(tr->srv->store, tb__sreq(req)->user, mid, path);
  if (may == UV_EAGAIN) {
    /* The route runs again once the database is read. */
    if (tb__store_defer(tr->srv->store, req) != 0)
      tb__server_respond_error(req, 503, "out of memory");
    return NULL;
  }
  if (may != 1) {
    tb__server_respond_error(req, 404, "%s: no such checkpoint", field);
    return NULL;
  }
  char *dir = tb__asprintf("%s/%.*s/%.*s/%.*s", tr->srv->opts.data_dir, (int)mid.len,
                           mid.base, (int)kind.len, kind.base, (int)name.len, name.base);
  if (dir == NULL)
    tb__server_respond_error(req, 503, "out of memory");
  return dir;
}

int tb__checkpoint_lora(tb__training_t *tr, tb_slice_t path, tb__lora_config_t *out,
                        tb__tbase_t **base) {
  static const char scheme[] = "tinker://";
  const char *mid = path.base + sizeof(scheme) - 1;
  const char *slash = memchr(mid, '/', path.len - (sizeof(scheme) - 1));
  for (tb__tmodel_t *m = tr->models; m != NULL && slash != NULL; m = m->next)
    if (m->session != NULL && strlen(m->id) == (size_t)(slash - mid) &&
        memcmp(m->id, mid, (size_t)(slash - mid)) == 0) {
      *out = m->lora;
      *base = m->base;
      return 1;
    }
  return 0;
}

typedef struct lora_read_s {
  uv_work_t work;
  tb__training_t *tr;
  char *dir;
  tb__lora_read_cb cb;
  void *data;
  int status;
  tb__lora_config_t lora;
  char base_name[128];
  tb_error_t err;
} lora_read_t;

static void lora_read_work(uv_work_t *w) {
  lora_read_t *r = w->data;
  tb__ckpt_info_t info = { 0 };
  r->status = tb__ckpt_read_info(r->dir, &info, &r->err);
  if (r->status != 0)
    return;
  r->lora.rank = info.rank;
  r->lora.alpha = (float)info.alpha;
  snprintf(r->base_name, sizeof(r->base_name), "%s", info.base_model ? info.base_model : "");
  for (size_t i = 0; i < info.n_targets; i++) {
    const char *t = info.targets[i];
    if (strcmp(t, "lm_head") == 0)
      r->lora.train_unembed = 1;
    else if (strcmp(t, "gate_proj") == 0 || strcmp(t, "up_proj") == 0 ||
             strcmp(t, "down_proj") == 0)
      r->lora.train_mlp = 1;
    else
      r->lora.train_attn = 1;
  }
  tb__ckpt_info_free(&info);
}

static void lora_read_done(uv_work_t *w, int status) {
  lora_read_t *r = w->data;
  tb__training_t *tr = r->tr;
  if (status != 0 && r->status == 0)
    r->status = status;
  const char *msg = r->err.message ? r->err.message : tb_strerror(r->status);
  r->cb(tr, r->data, r->status, &r->lora, r->base_name, msg);
  tb_error_clear(&r->err);
  free(r->dir);
  free(r);
  tb__training_fs_done(tr);
}

int tb__read_checkpoint_lora(tb__training_t *tr, const char *dir, tb__lora_read_cb cb,
                             void *data) {
  lora_read_t *r = calloc(1, sizeof(*r));
  char *d = r ? tb__strndup(dir, strlen(dir)) : NULL;
  if (d == NULL) {
    free(r);
    return TB_ENOMEM;
  }
  r->work.data = r;
  r->tr = tr;
  r->dir = d;
  r->cb = cb;
  r->data = data;
  int rc = uv_queue_work(tr->srv->loop, &r->work, lora_read_work, lora_read_done);
  if (rc != 0) {
    free(d);
    free(r);
    return TB_EIO;
  }
  tr->n_fs++;
  return 0;
}
