/*
 * capi_hostile.c — drives every error path of the C API (edgert.h) and one good run, for
 * tests/runtime/test_native_hostile.py and, built with AddressSanitizer/UBSan, test_sanitizers.py.
 *
 *   capi_hostile BUNDLE INPUT.bin OUTPUT.bin [STREAM_BUNDLE]
 *
 * INPUT.bin holds input 0's raw bytes; output 0's bytes of the good run go to OUTPUT.bin. Each
 * call prints one line "CASE<TAB>name<TAB>result<TAB>message" (result: the status, or the value of
 * calls that return a count; message: edgert_last_error() after a failure). The expectations live
 * in the Python test, so this program only reports; it exits 0 unless it could not run at all.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgert.h"

static void report(const char* name, long result) {
  const char* message = result != EDGERT_OK ? edgert_last_error() : "";
  printf("CASE\t%s\t%ld\t%s\n", name, result, message);
}

static void value(const char* name, long result) { printf("CASE\t%s\t%ld\t\n", name, result); }

static unsigned char* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  if (f == NULL) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char* data = malloc(n > 0 ? (size_t)n : 1);
  *size = fread(data, 1, (size_t)n, f);
  fclose(f);
  return data;
}

static long hook_calls = 0;
static void count_calls(void* user, const char* function, int before) {
  (void)function;
  if (before) ++*(long*)user;
}

/* A handle that was never opened: every call on NULL must refuse, not crash. */
static void null_model(void) {
  edgert_tensor_info info;
  unsigned char byte = 0;
  int64_t delay = 0, stride = 0;
  report("null_open_dir", edgert_open(NULL, NULL));
  value("null_num_inputs", (long)edgert_num_inputs(NULL));
  value("null_num_outputs", (long)edgert_num_outputs(NULL));
  report("null_input_info", edgert_input_info(NULL, 0, &info));
  report("null_output_info", edgert_output_info(NULL, 0, &info));
  report("null_set_input", edgert_set_input(NULL, 0, &byte, 1));
  report("null_run", edgert_run(NULL));
  report("null_get_output", edgert_get_output(NULL, 0, &byte, 1));
  report("null_set_call_hook", edgert_set_call_hook(NULL, count_calls, &hook_calls));
  value("null_is_stream", edgert_is_stream(NULL));
  report("null_stream_info", edgert_stream_info(NULL, &delay, &stride));
  report("null_stream_reset", edgert_stream_reset(NULL));
  report("null_stream_step", edgert_stream_step(NULL, NULL));
  edgert_close(NULL);
}

static void bad_bundles(const char* bundle) {
  edgert_model* m = (edgert_model*)1; /* must be reset to NULL on failure */
  char path[4096];
  report("open_null_out", edgert_open(bundle, NULL));
  snprintf(path, sizeof path, "%s/no-such-bundle", bundle);
  report("open_missing_dir", edgert_open(path, &m));
  value("open_missing_dir_handle_null", m == NULL);
  snprintf(path, sizeof path, "%s/lib", bundle); /* a directory, but no manifest */
  report("open_not_a_bundle", edgert_open(path, &m));
  snprintf(path, sizeof path, "%s/manifest.json", bundle); /* a file, not a directory */
  report("open_a_file", edgert_open(path, &m));
}

static int plain_model(const char* bundle, const char* input_path, const char* output_path) {
  edgert_model* m = NULL;
  edgert_tensor_info in, out;
  size_t in_size = 0;
  unsigned char* input = read_file(input_path, &in_size);
  if (input == NULL) {
    fprintf(stderr, "cannot read %s\n", input_path);
    return 1;
  }
  report("open", edgert_open(bundle, &m));
  if (m == NULL) return 1;
  report("input_info_index_past_end", edgert_input_info(m, edgert_num_inputs(m), &in));
  report("input_info_index_max", edgert_input_info(m, SIZE_MAX, &in));
  report("input_info_null_info", edgert_input_info(m, 0, NULL));
  report("output_info_index_past_end", edgert_output_info(m, edgert_num_outputs(m), &out));
  report("input_info", edgert_input_info(m, 0, &in));
  report("output_info", edgert_output_info(m, 0, &out));
  value("input_nbytes", (long)in.nbytes);
  value("input_file_bytes", (long)in_size);

  unsigned char* big = calloc(in.nbytes + 1, 1);
  unsigned char* result = calloc(out.nbytes + 1, 1);
  report("run_before_inputs", edgert_run(m));
  report("get_output_before_run", edgert_get_output(m, 0, result, out.nbytes));
  report("set_input_null_data", edgert_set_input(m, 0, NULL, in.nbytes));
  report("set_input_short", edgert_set_input(m, 0, big, in.nbytes - 1));
  report("set_input_long", edgert_set_input(m, 0, big, in.nbytes + 1));
  report("set_input_zero_bytes", edgert_set_input(m, 0, big, 0));
  report("set_input_size_max", edgert_set_input(m, 0, big, SIZE_MAX));
  report("set_input_index_past_end", edgert_set_input(m, edgert_num_inputs(m), big, in.nbytes));
  report("set_input_index_max", edgert_set_input(m, SIZE_MAX, big, in.nbytes));
  report("run_after_refused_inputs", edgert_run(m));
  report("stream_info_not_stream", edgert_stream_info(m, &(int64_t){0}, &(int64_t){0}));
  report("stream_reset_not_stream", edgert_stream_reset(m));
  report("stream_step_not_stream", edgert_stream_step(m, NULL));
  value("is_stream_plain", edgert_is_stream(m));

  report("set_input", edgert_set_input(m, 0, input, in_size));
  report("set_call_hook", edgert_set_call_hook(m, count_calls, &hook_calls));
  report("run", edgert_run(m));
  value("hook_calls_positive", hook_calls > 0);
  report("unset_call_hook", edgert_set_call_hook(m, NULL, NULL));
  report("get_output_short", edgert_get_output(m, 0, result, out.nbytes - 1));
  report("get_output_long", edgert_get_output(m, 0, result, out.nbytes + 1));
  report("get_output_null_data", edgert_get_output(m, 0, NULL, out.nbytes));
  report("get_output_index_past_end", edgert_get_output(m, edgert_num_outputs(m), result, out.nbytes));
  report("get_output", edgert_get_output(m, 0, result, out.nbytes));
  FILE* f = fopen(output_path, "wb");
  if (f == NULL || fwrite(result, 1, out.nbytes, f) != out.nbytes) return 1;
  fclose(f);

  /* A second handle on the same bundle is independent of the first. */
  edgert_model* second = NULL;
  report("open_second", edgert_open(bundle, &second));
  report("second_run_before_inputs", edgert_run(second));
  edgert_close(second);
  report("first_still_runs", edgert_run(m));
  edgert_close(m);
  free(big);
  free(result);
  free(input);
  return 0;
}

static int stream_model(const char* bundle) {
  edgert_model* m = NULL;
  edgert_tensor_info frame;
  int64_t delay = -1, stride = -1;
  int emitted = -1;
  report("stream_open", edgert_open(bundle, &m));
  if (m == NULL) return 1;
  value("stream_is_stream", edgert_is_stream(m));
  report("stream_info", edgert_stream_info(m, &delay, &stride));
  report("stream_info_null_delay", edgert_stream_info(m, NULL, &stride));
  size_t index = 0; /* the frame: the input that is not a state_in_* */
  while (index < edgert_num_inputs(m) && edgert_input_info(m, index, &frame) == EDGERT_OK &&
         strncmp(frame.name, "state_in_", 9) == 0)
    ++index;
  report("stream_frame_info", edgert_input_info(m, index, &frame));
  report("stream_step_before_frame", edgert_stream_step(m, &emitted));
  unsigned char* data = calloc(frame.nbytes + 1, 1);
  report("stream_set_frame_long", edgert_set_input(m, index, data, frame.nbytes + 1));
  report("stream_set_frame", edgert_set_input(m, index, data, frame.nbytes));
  report("stream_step", edgert_stream_step(m, &emitted));
  value("stream_first_step_emitted", emitted);
  report("stream_step_null_emitted", edgert_stream_step(m, NULL));
  report("stream_reset", edgert_stream_reset(m));
  edgert_close(m);
  free(data);
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: capi_hostile BUNDLE INPUT.bin OUTPUT.bin [STREAM_BUNDLE]\n");
    return 2;
  }
  null_model();
  bad_bundles(argv[1]);
  if (plain_model(argv[1], argv[2], argv[3]) != 0) return 1;
  if (argc > 4 && stream_model(argv[4]) != 0) return 1;
  printf("DONE\n");
  return 0;
}
