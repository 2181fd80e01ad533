/*
 * forward_backward chunking and the combination of chunk results (see
 * chunk.h).
 */
#include "client/chunk.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t tb__datum_estimated_bytes(const tb_train_datum_t *d) {
  size_t bytes = 4 * tb_model_input_length(&d->model_input);
  for (size_t i = 0; i < d->n_loss_fn_inputs; i++) {
    const tb_tensor_data_t *t = &d->loss_fn_inputs[i].tensor;
    bytes += t->numel * (t->dtype == TB_TENSOR_INT64 ? 8 : 4);
  }
  return bytes;
}

int tb__chunk_split(const tb_train_datum_t *data, size_t n, size_t max_len, size_t max_bytes,
                    size_t **bounds, size_t *n_chunks) {
  if (n == 0 || max_len == 0 || max_bytes == 0)
    return TB_EINVAL;
  size_t *b = malloc((n + 1) * sizeof(size_t));
  if (b == NULL)
    return TB_ENOMEM;
  size_t k = 0, in_chunk = 0, bytes = 0;
  b[k++] = 0;
  for (size_t i = 0; i < n; i++) {
    size_t sz = tb__datum_estimated_bytes(&data[i]);
    if (in_chunk > 0 && (in_chunk >= max_len || bytes + sz > max_bytes)) {
      b[k++] = i;
      in_chunk = 0;
      bytes = 0;
    }
    in_chunk++;
    bytes += sz;
  }
  b[k] = n;
  *bounds = b;
  *n_chunks = k;
  return 0;
}

/* ------------------------------------------------------------ metrics */

static const char *reduction_of(const char *name) {
  const char *colon = strrchr(name, ':');
  return colon ? colon + 1 : "";
}

static const tb_metric_t *find(const tb_metric_t *m, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(m[i].name, name) == 0)
      return &m[i];
  return NULL;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* FNV-1a over the sorted values' bits, folded to 53 bits so that the
 * number is exact in a double. */
static double hash_unordered(double *vals, size_t n) {
  qsort(vals, n, sizeof(double), cmp_double);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) {
    uint64_t bits;
    memcpy(&bits, &vals[i], sizeof(bits));
    for (int k = 0; k < 8; k++) {
      h ^= (bits >> (8 * k)) & 0xff;
      h *= 1099511628211ull;
    }
  }
  return (double)(h >> 11);
}

static int push(tb_metric_t **out, size_t *n_out, size_t *cap, const char *name,
                double value) {
  if (*n_out == *cap) {
    size_t nc = *cap ? *cap * 2 : 8;
    tb_metric_t *m = realloc(*out, nc * sizeof(*m));
    if (m == NULL)
      return TB_ENOMEM;
    *out = m;
    *cap = nc;
  }
  char *nm = strdup(name);
  if (nm == NULL)
    return TB_ENOMEM;
  (*out)[*n_out].name = nm;
  (*out)[*n_out].value = value;
  (*n_out)++;
  return 0;
}

static void metrics_release(tb_metric_t *m, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(m[i].name);
  free(m);
}

int tb__metrics_reduce(const tb_metric_t *const *metrics, const size_t *n_metrics,
                       const double *weights, size_t n, tb_metric_t **out, size_t *n_out) {
  tb_metric_t *res = NULL;
  size_t nres = 0, cap = 0;
  double *vals = malloc((n + 1) * sizeof(double));
  if (vals == NULL)
    return TB_ENOMEM;
  int rc = 0;
  double wsum = 0;
  for (size_t p = 0; p < n; p++)
    wsum += weights[p];
  for (size_t i = 0; n > 0 && rc == 0 && i < n_metrics[0]; i++) {
    const char *name = metrics[0][i].name;
    int everywhere = 1;
    for (size_t p = 0; p < n && everywhere; p++) {
      const tb_metric_t *m = find(metrics[p], n_metrics[p], name);
      if (m == NULL)
        everywhere = 0;
      else
        vals[p] = m->value;
    }
    if (!everywhere)
      continue;
    const char *red = reduction_of(name);
    double mean = 0, mx = -INFINITY, mn = INFINITY, sum = 0;
    for (size_t p = 0; p < n; p++) {
      sum += vals[p];
      mean += vals[p] * weights[p];
      mx = vals[p] > mx ? vals[p] : mx;
      mn = vals[p] < mn ? vals[p] : mn;
    }
    mean = wsum > 0 ? mean / wsum : 0.0;
    if (strcmp(red, "sum") == 0) {
      rc = push(&res, &nres, &cap, name, sum);
    } else if (strcmp(red, "mean") == 0) {
      rc = push(&res, &nres, &cap, name, mean);
    } else if (strcmp(red, "min") == 0) {
      rc = push(&res, &nres, &cap, name, mn);
    } else if (strcmp(red, "max") == 0) {
      rc = push(&res, &nres, &cap, name, mx);
    } else if (strcmp(red, "slack") == 0) {
      rc = push(&res, &nres, &cap, name, mx - mean);
    } else if (strcmp(red, "hash_unordered") == 0) {
      rc = push(&res, &nres, &cap, name, hash_unordered(vals, n));
    } else if (strcmp(red, "unique") == 0) {
      size_t distinct = 0;
      for (size_t p = 0; rc == 0 && p < n; p++) {
        int seen = 0;
        for (size_t q = 0; q < p && !seen; q++)
          seen = vals[q] == vals[p];
        if (seen)
          continue;
        distinct++;
        if (distinct == 1) {
          rc = push(&res, &nres, &cap, name, vals[p]);
        } else {
          char nm[512];
          snprintf(nm, sizeof(nm), "%s_%zu", name, distinct);
          rc = push(&res, &nres, &cap, nm, vals[p]);
        }
      }
    }
  }
  free(vals);
  if (rc != 0) {
    metrics_release(res, nres);
    return rc;
  }
  *out = res;
  *n_out = nres;
  return 0;
}

/* ------------------------------------------------------------ results */

static void free_parts(tb_forward_backward_output_t **parts, size_t n) {
  for (size_t i = 0; i < n; i++) {
    tb_forward_backward_output_free(parts[i]);
    parts[i] = NULL;
  }
}

int tb__fwdbwd_combine(tb_forward_backward_output_t **parts, const size_t *n_datums, size_t n,
                       tb_forward_backward_output_t **out, tb_error_t *err) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    if (parts[i]->n_outputs != n_datums[i]) {
      tb_error_set(err, TB_EPROTO, TB_CATEGORY_SERVER,
                   "forward_backward chunk %zu: %zu outputs for %zu datums", i,
                   parts[i]->n_outputs, n_datums[i]);
      free_parts(parts, n);
      return TB_EPROTO;
    }
    total += n_datums[i];
  }
  tb_forward_backward_output_t *o = calloc(1, sizeof(*o));
  const tb_metric_t **ms = calloc(n + 1, sizeof(*ms));
  size_t *nms = calloc(n + 1, sizeof(*nms));
  double *w = calloc(n + 1, sizeof(*w));
  int rc = TB_ENOMEM;
  if (o == NULL || ms == NULL || nms == NULL || w == NULL)
    goto done;
  o->outputs = calloc(total + 1, sizeof(*o->outputs));
  if (o->outputs == NULL)
    goto done;
  for (size_t i = 0; i < n; i++) {
    ms[i] = parts[i]->metrics;
    nms[i] = parts[i]->n_metrics;
    w[i] = (double)n_datums[i];
  }
  if ((rc = tb__metrics_reduce(ms, nms, w, n, &o->metrics, &o->n_metrics)) != 0)
    goto done;
  /* The outputs move over; each part keeps none. */
  for (size_t i = 0; i < n; i++) {
    memcpy(o->outputs + o->n_outputs, parts[i]->outputs,
           parts[i]->n_outputs * sizeof(*o->outputs));
    o->n_outputs += parts[i]->n_outputs;
    parts[i]->n_outputs = 0;
  }
  o->loss_fn_output_type = parts[0]->loss_fn_output_type;
  parts[0]->loss_fn_output_type = NULL;
  rc = 0;
done:
  free(ms);
  free(nms);
  free(w);
  free_parts(parts, n);
  if (rc != 0) {
    tb_forward_backward_output_free(o);
    if (rc == TB_ENOMEM)
      tb_error_set(err, rc, TB_CATEGORY_NONE, "out of memory");
    return rc;
  }
  *out = o;
  return 0;
}
