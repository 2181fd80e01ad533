/*
 * Helpers of the training, sampling and REST clients (see clients.h).
 */
#include "client/clients.h"

#include <stdlib.h>
#include <string.h>

int tb__client_wait_take(tb__rt_t *rt, tb_future_t *f, const tb_result_type_t *type,
                         void **result, tb_error_t *err) {
  uint64_t timeout = rt->cfg.wait_timeout_ms;
  int rc = tb_future_wait(f, timeout);
  if (rc == 0) {
    void *r = tb_future_take(f, type);
    if (result != NULL)
      *result = r;
    else if (r != NULL && type != NULL && type->free != NULL)
      type->free(r);
  } else if (tb_future_is_done(f)) {
    if (err != NULL && tb_error_copy(err, &f->error) != 0)
      tb_error_set(err, rc, f->error.category, "%s", tb_strerror(rc));
  } else if (rc == TB_ETIMEDOUT) {
    tb_error_set(err, rc, TB_CATEGORY_TIMEOUT, "no answer within the wait of %llu ms",
                 (unsigned long long)timeout);
  } else {
    tb_error_set(err, rc, TB_CATEGORY_USER, "cannot wait: %s", tb_strerror(rc));
  }
  tb_future_free(f);
  return rc;
}

int tb__client_check_nested(tb_service_client_t *sc, tb_error_t *err) {
  if (sc == NULL || sc->loop == NULL || !tb__loop_is_entered(sc->loop))
    return 0;
  return tb_error_set(err, TB_ENESTED, TB_CATEGORY_USER,
                      "a _sync function was called from inside a callback of its loop; "
                      "use the future-returning form there");
}

int tb__client_refused(tb_error_t *err, int rc, const char *what) {
  tb_category_t cat = rc == TB_ENOMEM ? TB_CATEGORY_NONE
                      : rc == TB_ECLOSING ? TB_CATEGORY_CANCELLED
                                          : TB_CATEGORY_USER;
  return tb_error_set(err, rc, cat, "%s: %s", what, tb_strerror(rc));
}
