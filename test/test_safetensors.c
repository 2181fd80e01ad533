/*
 * engine/safetensors: half-float conversions, f32 round trips, hand-made
 * F16/BF16 files, and every kind of corrupt file giving an error that names
 * the file (and the tensor when there is one) instead of a crash.
 */
#define _GNU_SOURCE  /* nftw flags */
#include "tb_test.h"
#include "fixtures.h"

#include <dirent.h>
#include <ftw.h>
#include <unistd.h>

#include "engine/jsonfile.h"
#include "engine/safetensors.h"
#include "kernels/kernels.h"

static char tmpdir[64];
static void make_tmpdir(void) { tb_test_tmpdir(tmpdir, "tb-st"); }
static void remove_tmpdir(void) { tb_test_tmpdir_remove(tmpdir); }
static char *path_in(const char *name) { return tb_test_path_in(tmpdir, name); }

/* Writes a file by hand: 8-byte length (hlen, usually strlen(header)),
 * the header text, then data. */
static void write_raw(const char *path, uint64_t hlen, const char *header,
                      const void *data, size_t data_len) {
  FILE *f = fopen(path, "wb");
  ASSERT(f != NULL);
  unsigned char b[8];
  for (int i = 0; i < 8; i++)
    b[i] = (unsigned char)(hlen >> (8 * i));
  ASSERT_EQ_INT(fwrite(b, 1, 8, f), 8);
  size_t hl = strlen(header);
  ASSERT_EQ_INT(fwrite(header, 1, hl, f), hl);
  if (data_len > 0)
    ASSERT_EQ_INT(fwrite(data, 1, data_len, f), data_len);
  ASSERT_EQ_INT(fclose(f), 0);
}

static uint32_t bits_of(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

TEST(f16_conversion_matches_the_definition_for_every_value) {
  for (uint32_t h = 0; h < 65536; h++) {
    int sign = (h >> 15) & 1, exp = (h >> 10) & 31, mant = h & 1023;
    float got = tb__f16_to_f32((uint16_t)h);
    if (exp == 31) {
      if (mant == 0)
        ASSERT(isinf(got) && (signbit(got) != 0) == sign);
      else
        ASSERT(isnan(got));
      continue;
    }
    /* Exact in double: at most 11 significant bits. */
    double want = exp == 0 ? ldexp((double)mant, -24)
                           : ldexp(1.0 + mant / 1024.0, exp - 15);
    if (sign)
      want = -want;
    if (bits_of(got) != bits_of((float)want))
      tb_test_fail(__FILE__, __LINE__, "half 0x%04x: got %.9g want %.9g", h,
                   (double)got, want);
  }
  ASSERT_EQ_INT(bits_of(tb__f16_to_f32(0x8000)), 0x80000000u);
  ASSERT_NEAR(tb__f16_to_f32(0x0001), 5.9604644775390625e-08, 0, 0);
  ASSERT_NEAR(tb__f16_to_f32(0x7bff), 65504.0, 0, 0);
  ASSERT_NEAR(tb__f16_to_f32(0x3555), 0.333251953125, 0, 0);
  /* The quiet bit of a NaN survives. */
  ASSERT_EQ_INT(bits_of(tb__f16_to_f32(0x7e00)), 0x7fc00000u);
}

TEST(bf16_conversion) {
  ASSERT_NEAR(tb__bf16_to_f32(0x3f80), 1.0, 0, 0);
  ASSERT_NEAR(tb__bf16_to_f32(0xc040), -3.0, 0, 0);
  ASSERT(isinf(tb__bf16_to_f32(0x7f80)));
  ASSERT(isnan(tb__bf16_to_f32(0x7fc1)));
  ASSERT_EQ_INT(bits_of(tb__bf16_to_f32(0x0001)), 0x00010000u);
}

TEST(f32_round_trip_with_metadata) {
  make_tmpdir();
  char *path = path_in("rt.safetensors");
  float a[6] = { 1.5f, -2.25f, 3e-39f /* subnormal */, 0.0f, -0.0f, 1e30f };
  float b[3] = { 7, 8, 9 };
  float c[1] = { 42 };
  tb__st_out_t outs[4] = {
    { "layer.a", 2, { 2, 3 }, a },
    { "b", 1, { 3 }, b },
    { "scalar", 0, { 0 }, c },
    { "empty", 2, { 0, 5 }, NULL },
  };
  json_t *meta = json_pack("{s:s, s:s}", "format", "pt", "note", "hi");
  tb_error_t err = { 0 };
  ASSERT_OK(tb__st_write(path, outs, 4, meta, &err));
  json_decref(meta);

  /* Only the final file is in the directory: the temporary was renamed. */
  DIR *d = opendir(tmpdir);
  int entries = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') {
      entries++;
      ASSERT_STR_EQ(e->d_name, "rt.safetensors");
    }
  closedir(d);
  ASSERT_EQ_INT(entries, 1);

  tb__st_file_t f;
  ASSERT_OK(tb__st_open(&f, path, &err));
  ASSERT_EQ_INT(f.n_tensors, 4);
  /* The data region starts 8-byte aligned. */
  const unsigned char *m = f.map;
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = (hlen << 8) | m[i];
  ASSERT_EQ_INT((8 + hlen) % 8, 0);
  ASSERT_STR_EQ(tb__st_metadata(&f, "note"), "hi");
  ASSERT_STR_EQ(tb__st_metadata(&f, "format"), "pt");
  ASSERT(tb__st_metadata(&f, "absent") == NULL);

  const tb__st_tensor_t *ta = tb__st_find(&f, "layer.a");
  ASSERT(ta != NULL);
  ASSERT_EQ_INT(ta->ndim, 2);
  ASSERT_EQ_INT(ta->shape[0], 2);
  ASSERT_EQ_INT(ta->shape[1], 3);
  ASSERT_EQ_INT(ta->dtype, TB_ST_F32);
  float got[6];
  ASSERT_OK(tb__st_read_f32(&f, ta, got, 6, &err));
  ASSERT_EQ_INT(memcmp(got, a, sizeof(a)), 0);
  const tb__st_tensor_t *ts = tb__st_find(&f, "scalar");
  ASSERT_EQ_INT(ts->ndim, 0);
  ASSERT_EQ_INT(ts->numel, 1);
  ASSERT_OK(tb__st_read_f32(&f, ts, got, 1, &err));
  ASSERT_NEAR(got[0], 42, 0, 0);
  ASSERT_EQ_INT(tb__st_find(&f, "empty")->numel, 0);
  ASSERT(tb__st_find(&f, "nope") == NULL);
  /* A wrong destination size is a shape error naming the tensor. */
  ASSERT_ERR(tb__st_read_f32(&f, tb__st_find(&f, "b"), got, 4, &err),
             TB_ESHAPE);
  ASSERT_STR_CONTAINS(err.message, "tensor b has 3 elements");
  tb__st_close(&f);
  tb__st_close(&f);  /* safe twice */

  /* Overwriting replaces the file whole. */
  ASSERT_OK(tb__st_write(path, outs + 1, 1, NULL, &err));
  ASSERT_OK(tb__st_open(&f, path, &err));
  ASSERT_EQ_INT(f.n_tensors, 1);
  tb__st_close(&f);
  tb_error_clear(&err);
  free(path);
  remove_tmpdir();
}

TEST(writer_rejects_bad_lists) {
  make_tmpdir();
  char *path = path_in("bad.safetensors");
  float x[2] = { 1, 2 };
  tb__st_out_t dup[2] = { { "x", 1, { 2 }, x }, { "x", 1, { 2 }, x } };
  tb_error_t err = { 0 };
  ASSERT_ERR(tb__st_write(path, dup, 2, NULL, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(err.message, "duplicate");
  tb__st_out_t meta_name[1] = { { "__metadata__", 1, { 2 }, x } };
  ASSERT_ERR(tb__st_write(path, meta_name, 1, NULL, &err), TB_EINVAL);
  ASSERT(access(path, F_OK) != 0);
  tb_error_clear(&err);
  free(path);
  remove_tmpdir();
}

TEST(reads_handwritten_f16_and_bf16) {
  make_tmpdir();
  char *path = path_in("half.safetensors");
  /* a: F16 [2,2] = 1, -2, 0.5, 65504; b: BF16 [3] = 1, -3, 0.15625 (at an
   * odd offset, so reads cannot rely on alignment). */
  const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"a\":{\"dtype\":\"F16\",\"shape\":[2,2],"
                    "\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],"
                    "\"data_offsets\":[9,15]}}";
  unsigned char data[15] = {
    0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38, 0xff, 0x7b,
    0xee,
    0x80, 0x3f, 0x40, 0xc0, 0x20, 0x3e,
  };
  write_raw(path, strlen(hdr), hdr, data, sizeof(data));
  tb__st_file_t f;
  tb_error_t err = { 0 };
  ASSERT_OK(tb__st_open(&f, path, &err));
  const tb__st_tensor_t *a = tb__st_find(&f, "a"), *b = tb__st_find(&f, "b");
  ASSERT(a != NULL && b != NULL);
  ASSERT_EQ_INT(a->dtype, TB_ST_F16);
  ASSERT_EQ_INT(b->dtype, TB_ST_BF16);
  float va[4], vb[3];
  ASSERT_OK(tb__st_read_f32(&f, a, va, 4, &err));
  ASSERT_OK(tb__st_read_f32(&f, b, vb, 3, &err));
  ASSERT_NEAR(va[0], 1, 0, 0);
  ASSERT_NEAR(va[1], -2, 0, 0);
  ASSERT_NEAR(va[2], 0.5, 0, 0);
  ASSERT_NEAR(va[3], 65504, 0, 0);
  ASSERT_NEAR(vb[0], 1, 0, 0);
  ASSERT_NEAR(vb[1], -3, 0, 0);
  ASSERT_NEAR(vb[2], 0.15625, 0, 0);
  tb__st_close(&f);
  free(path);
  remove_tmpdir();
}

/* Opens a hand-made file and expects `code` with a message naming the
 * file and containing `needle`. */
static void expect_bad(const char *name, uint64_t hlen, const char *hdr,
                       size_t data_len, int code, const char *needle) {
  char *path = path_in(name);
  unsigned char data[64] = { 0 };
  ASSERT(data_len <= sizeof(data));
  write_raw(path, hlen, hdr, data, data_len);
  tb__st_file_t f;
  tb_error_t err = { 0 };
  int rc = tb__st_open(&f, path, &err);
  if (rc != code)
    tb_test_fail(__FILE__, __LINE__, "%s: got %s, expected %s (%s)", name,
                 tb_err_name(rc), tb_err_name(code), tb_error_message(&err));
  ASSERT_STR_CONTAINS(err.message, path);
  ASSERT_STR_CONTAINS(err.message, needle);
  ASSERT(f.map == NULL && f.tensors == NULL);
  tb__st_close(&f);
  tb_error_clear(&err);
  free(path);
}

#define H(s) strlen(s), s

TEST(corrupt_files_give_errors_naming_the_file) {
  make_tmpdir();
  const char *ok = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],"
                   "\"data_offsets\":[0,24]}}";
  /* Data cut short: the end offset is past the end of the file. */
  expect_bad("truncated.st", H(ok), 20, TB_ECORRUPT, "tensor w");
  expect_bad("truncated2.st", H(ok), 0, TB_ECORRUPT, "truncated");
  expect_bad("len_too_big.st", (uint64_t)1 << 40, ok, 24, TB_ECORRUPT,
             "header length");
  expect_bad("len_past_eof.st", strlen(ok) + 100, ok, 24, TB_ECORRUPT,
             "header length");
  expect_bad("len_zero.st", 0, "", 0, TB_ECORRUPT, "header length");
  expect_bad("bad_json.st", H("{\"w\": {\"dtype\": \"F32\", "), 0,
             TB_ECORRUPT, "not valid JSON");
  expect_bad("not_object.st", H("[1, 2]"), 0, TB_ECORRUPT, "not an object");
  expect_bad("past_eof.st", H("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],"
             "\"data_offsets\":[0,8]},\"v\":{\"dtype\":\"F32\",\"shape\":[4],"
             "\"data_offsets\":[8,24]}}"), 16, TB_ECORRUPT, "tensor v");
  expect_bad("mismatch.st", H("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],"
             "\"data_offsets\":[0,20]}}"), 24, TB_ECORRUPT,
             "tensor w: data_offsets span 20 bytes");
  expect_bad("mismatch16.st", H("{\"w\":{\"dtype\":\"BF16\",\"shape\":[4],"
             "\"data_offsets\":[0,16]}}"), 16, TB_ECORRUPT, "BF16 need 8");
  expect_bad("dtype.st", H("{\"w\":{\"dtype\":\"I8\",\"shape\":[4],"
             "\"data_offsets\":[0,4]}}"), 4, TB_EUNSUPPORTED,
             "w.dtype: unsupported dtype \"I8\"");
  expect_bad("reversed.st", H("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],"
             "\"data_offsets\":[8,4]}}"), 8, TB_ECORRUPT, "reversed");
  expect_bad("overlap.st", H("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],"
             "\"data_offsets\":[0,8]},\"v\":{\"dtype\":\"F32\",\"shape\":[2],"
             "\"data_offsets\":[4,12]}}"), 12, TB_ECORRUPT, "overlap");
  expect_bad("neg_shape.st", H("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],"
             "\"data_offsets\":[0,4]}}"), 4, TB_ECORRUPT, "w.shape[0]");
  expect_bad("no_offsets.st", H("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}"),
             4, TB_ECORRUPT, "w.data_offsets");
  expect_bad("bad_meta.st", H("{\"__metadata__\":{\"k\":1}}"), 0,
             TB_ECORRUPT, "__metadata__.k");
  expect_bad("dup.st", H("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],"
             "\"data_offsets\":[0,4]},\"w\":{\"dtype\":\"F32\",\"shape\":[1],"
             "\"data_offsets\":[0,4]}}"), 4, TB_ECORRUPT, "JSON");

  /* Shorter than the length prefix itself. */
  char *tiny = path_in("tiny.st");
  FILE *fp = fopen(tiny, "wb");
  fwrite("abc", 1, 3, fp);
  fclose(fp);
  tb__st_file_t f;
  tb_error_t err = { 0 };
  ASSERT_ERR(tb__st_open(&f, tiny, &err), TB_ECORRUPT);
  ASSERT_STR_CONTAINS(err.message, tiny);
  free(tiny);

  char *missing = path_in("missing.st");
  ASSERT_ERR(tb__st_open(&f, missing, &err), TB_ENOENT);
  ASSERT_STR_CONTAINS(err.message, missing);
  free(missing);
  tb_error_clear(&err);
  remove_tmpdir();
}

/* A new temporary directory and in it the file name of two tensors, a
 * (5 floats) and b (1 x 2), read back whole into *whole; its path. */
static char *two_tensor_file(const char *name, tb__buf_t *whole) {
  make_tmpdir();
  char *path = path_in(name);
  float a[5] = { 1, 2, 3, 4, 5 }, b[2] = { 6, 7 };
  tb__st_out_t outs[2] = { { "a", 1, { 5 }, a }, { "b", 2, { 1, 2 }, b } };
  tb_error_t err = { 0 };
  ASSERT_OK(tb__st_write(path, outs, 2, NULL, &err));
  ASSERT_OK(tb__file_read_all(path, whole, &err));
  return path;
}

TEST(truncating_a_real_file_at_every_length_never_crashes) {
  tb__buf_t whole = TB_BUF_INIT;
  char *path = two_tensor_file("full.st", &whole);
  tb_error_t err = { 0 };
  char *cut = path_in("cut.st");
  for (size_t len = 0; len < whole.len; len++) {
    ASSERT_OK(tb__file_write_atomic(cut, whole.base, len, &err));
    tb__st_file_t f;
    ASSERT_ERR(tb__st_open(&f, cut, &err), TB_ECORRUPT);
    ASSERT_STR_CONTAINS(err.message, cut);
  }
  tb__buf_free(&whole);
  tb_error_clear(&err);
  free(cut);
  free(path);
  remove_tmpdir();
}

/* The writer's rounding to f16 and bf16: every 16-bit value survives the
 * round trip through float32, and a float between two neighbours goes to
 * the nearer one, ties to the even one, against a definition in double. */
TEST(f32_to_f16_and_bf16_round_to_nearest_even) {
  for (uint32_t h = 0; h < 65536; h++) {
    float f = tb__f16_to_f32((uint16_t)h), b = tb__bf16_to_f32((uint16_t)h);
    if (isnan(f))
      ASSERT(isnan(tb__f16_to_f32(tb__f32_to_f16(f))));
    else
      ASSERT_EQ_INT(tb__f32_to_f16(f), h);
    if (isnan(b))
      ASSERT(isnan(tb__bf16_to_f32(tb__f32_to_bf16(b))));
    else
      ASSERT_EQ_INT(tb__f32_to_bf16(b), h);
  }
  uint64_t st = 99;
  for (int i = 0; i < 200000; i++) {
    uint32_t bits = (uint32_t)tb__k_splitmix64(&st);
    float f;
    memcpy(&f, &bits, 4);
    if (!isfinite(f))
      continue;
    /* Nearest by value in double; ties to an even pattern. */
    uint16_t got = tb__f32_to_f16(f);
    double g = tb__f16_to_f32(got);
    if (fabs((double)f) < 65520.0) {
      ASSERT(isfinite(g));
      for (int d = -1; d <= 1; d += 2) {
        uint16_t nb = (uint16_t)(got + d);
        double n = tb__f16_to_f32(nb);
        if ((nb & 0x7fff) > 0x7bff || ((got ^ nb) & 0x8000))
          continue;
        double eg = fabs(g - f), en = fabs(n - f);
        ASSERT(eg < en || (eg == en && (got & 1) == 0));
      }
    } else {
      ASSERT(isinf(g) && (g > 0) == (f > 0));
    }
    uint16_t b = tb__f32_to_bf16(f);
    double bg = tb__bf16_to_f32(b);
    for (int d = -1; d <= 1; d += 2) {
      uint16_t nb = (uint16_t)(b + d);
      double n = tb__bf16_to_f32(nb);
      if (!isfinite(n) || ((b ^ nb) & 0x8000))
        continue;
      double eg = fabs(bg - f), en = fabs(n - f);
      ASSERT(eg < en || (eg == en && (b & 1) == 0));
    }
  }
}

/* The same reader over the bytes in memory: every prefix of a file fails
 * as the file would, naming what the caller calls it, and the whole of it
 * opens with tensors that point into the caller's buffer. */
TEST(buffer_reads_like_the_file) {
  tb__buf_t whole = TB_BUF_INIT;
  char *path = two_tensor_file("buf.st", &whole);
  tb_error_t err = { 0 };
  tb__st_file_t f;
  for (size_t len = 0; len < whole.len; len++) {
    ASSERT_ERR(tb__st_open_buffer(&f, "upload", whole.base, len, &err), TB_ECORRUPT);
    ASSERT_STR_CONTAINS(err.message, "upload: ");
    ASSERT(f.path == NULL && f.tensors == NULL);
  }
  ASSERT_OK(tb__st_open_buffer(&f, "upload", whole.base, whole.len, &err));
  ASSERT_EQ_INT(f.n_tensors, 2);
  const tb__st_tensor_t *tb = tb__st_find(&f, "b");
  ASSERT(tb != NULL);
  ASSERT((const char *)tb->data > whole.base &&
         (const char *)tb->data + tb->nbytes <= whole.base + whole.len);
  float got[2];
  ASSERT_OK(tb__st_read_f32(&f, tb, got, 2, &err));
  ASSERT_NEAR(got[1], 7, 0, 0);
  tb__st_close(&f);
  tb__buf_free(&whole);
  tb_error_clear(&err);
  free(path);
  remove_tmpdir();
}

TEST_LIST(
  TEST_ENTRY(f16_conversion_matches_the_definition_for_every_value),
  TEST_ENTRY(bf16_conversion),
  TEST_ENTRY(f32_to_f16_and_bf16_round_to_nearest_even),
  TEST_ENTRY(f32_round_trip_with_metadata),
  TEST_ENTRY(writer_rejects_bad_lists),
  TEST_ENTRY(reads_handwritten_f16_and_bf16),
  TEST_ENTRY(corrupt_files_give_errors_naming_the_file),
  TEST_ENTRY(truncating_a_real_file_at_every_length_never_crashes),
  TEST_ENTRY(buffer_reads_like_the_file),
)
