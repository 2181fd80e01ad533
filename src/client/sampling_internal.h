/*
 * What sampling_client.c (samples under flow control) and
 * sampling_session.c (the session) share.  Private to src/client/.
 */
#ifndef TB_CLIENT_SAMPLING_INTERNAL_H
#define TB_CLIENT_SAMPLING_INTERNAL_H

#include "client/internal.h"
#include "tinkerbell/sampling_client.h"

struct tb__sampling_op_s;  /* a sample waiting or in flight (sampling_client.c) */

struct tb__sampling_client_s {
  tb_sampling_client_t *pub;
  tb_service_client_t *svc;
  tb__rt_t *rt;
  char *session_id;
  char *model_path;
  char *base_model;
  int state;                    /* 0 waiting for the session, 1 ready, -1 failed */
  tb_error_t create_err;
  int64_t sampling_seq;         /* its sampling_session_seq_id */
  tb_future_t *create_f;        /* the caller's creation future, if any */
  tb_future_t *session_f;
  tb_future_t *create_op_f;
  int64_t next_seq;
  size_t max_in_flight;
  size_t in_flight;
  uint64_t backoff_until;       /* uv_now() before which nothing is sent */
  tb__alarm_t backoff_alarm;
  struct tb__sampling_op_s *queue, *queue_tail;
  struct tb__sampling_op_s *live;
  size_t n_live;
  int closing;
  tb__alarm_t close_alarm;
};

static inline struct tb__sampling_client_s *tb__sampling_usable(tb_sampling_client_t *samp) {
  return samp != NULL ? samp->impl_ : NULL;
}

/* Sends what may be sent now (the session is ready, the flow control
 * allows), or fails what waits when the session failed or the client
 * closes. */
void tb__sampling_pump(struct tb__sampling_client_s *s);
/* Finishes a close (on a later loop turn) once no sample, creation or
 * session request is live any more. */
void tb__sampling_check_closed(struct tb__sampling_client_s *s);

#endif /* TB_CLIENT_SAMPLING_INTERNAL_H */
