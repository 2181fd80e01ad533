/*
 * forward_backward chunking, as the Tinker SDK does it (wire protocol
 * §8.2 and §5.4): the data is split greedily, in order, into chunks of at
 * most max_len datums and max_bytes estimated bytes; the chunks' results
 * are joined in input order and their metrics reduced by the suffix of
 * their name ("loss:sum", "acc:mean", ...).  Pure functions, no loop.
 */
#ifndef TB_CLIENT_CHUNK_H
#define TB_CLIENT_CHUNK_H

#include <stddef.h>

#include "tinkerbell/types.h"

#define TB_CHUNK_MAX_LEN 1024
#define TB_CHUNK_MAX_BYTES 5000000

/* The SDK's estimate of a datum's protobuf payload: 4 bytes per token and
 * each tensor's bytes in its dtype. */
size_t tb__datum_estimated_bytes(const tb_train_datum_t *d);

/* Splits n >= 1 datums: chunk k holds [(*bounds)[k], (*bounds)[k+1]); the
 * malloc'd bounds has *n_chunks + 1 entries.  A chunk closes when it holds
 * max_len datums, or when the next datum would take it past max_bytes
 * (a single datum over max_bytes makes a chunk of its own).  Returns 0,
 * TB_EINVAL (n == 0, a zero limit) or TB_ENOMEM. */
int tb__chunk_split(const tb_train_datum_t *data, size_t n, size_t max_len, size_t max_bytes,
                    size_t **bounds, size_t *n_chunks);

/* Reduces the metrics of n parts, part i weighing weights[i] (its datum
 * count).  Only names present in every part survive; the reduction is
 * the text after the last ':':
 *   sum, min, max; mean (weighted); slack (max minus weighted mean);
 *   unique (the distinct values in part order: the first under the name,
 *           the next ones under name_2, name_3, ...);
 *   hash_unordered (an order-independent hash of the values, as a number).
 * Names with another or no reduction are dropped, as the SDK drops them.
 * *out is malloc'd (tb_metric_t names too). */
int tb__metrics_reduce(const tb_metric_t *const *metrics, const size_t *n_metrics,
                       const double *weights, size_t n, tb_metric_t **out, size_t *n_out);

/* Joins the outputs of n parts (in chunk order) into one result and
 * reduces their metrics, weighted by each part's datum count n_datums[i].
 * The parts are consumed (freed) in every case.  Returns 0, TB_EPROTO
 * when a part has a number of outputs other than its datum count (with
 * err), or TB_ENOMEM. */
int tb__fwdbwd_combine(tb_forward_backward_output_t **parts, const size_t *n_datums, size_t n,
                       tb_forward_backward_output_t **out, tb_error_t *err);

#endif /* TB_CLIENT_CHUNK_H */
