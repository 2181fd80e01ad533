/*
 * The public server handle's entry points that put the server together
 * (include/tinkerbell/server.h): the server core (server.c) with the
 * route table's core and store parts, the training part (training.c)
 * with the table's training part.  Nothing inside the server calls this
 * file: the core and the parts register no routes of their own, so the
 * files of routes depend on the core and never the other way.
 */
#include "server/routes.h"
#include "server/training.h"

#include <stdio.h>

int tb_server_init(uv_loop_t *loop, tb_server_t *server, const tb_server_options_t *opts) {
  return tb__server_init(loop, server, opts, tb__routes_add);
}

int tb__training_start(tb__server_t *srv, const tb__engine_opts_t *opts,
                       const char *const *models, size_t n_models, tb_error_t *err) {
  tb__training_t *tr = NULL;
  int rc = tb__training_create(srv, opts, models, n_models, &tr, err);
  if (tr == NULL)
    return rc;
  int rrc = tb__routes_add(srv, TB__PART_TRAINING, tr);
  if (rc == 0 && rrc != 0)
    return tb_error_set(err, rrc, TB_CATEGORY_SERVER, "cannot start the training part: %s",
                        tb_strerror(rrc));
  return rc;
}

int tb_server_start_training(tb_server_t *server, const char *const *models, size_t n_models,
                             size_t shards) {
  tb__server_t *srv = server->impl_;
  if (srv == NULL || srv->closing)
    return TB_ECLOSING;
  if (tb__training_find(srv) != NULL) {
    snprintf(server->message, sizeof(server->message), "the training part already runs");
    return TB_EBUSY;
  }
  tb__engine_opts_t eo = { .shards = shards };
  tb_error_t err = { 0 };
  int rc = tb__training_start(srv, &eo, models, n_models, &err);
  if (rc != 0)
    snprintf(server->message, sizeof(server->message), "%s", tb_error_message(&err));
  tb_error_clear(&err);
  return rc;
}
