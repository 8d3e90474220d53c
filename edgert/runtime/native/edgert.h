/*
 * edgert.h — run an edgert bundle from C or C++.
 *
 * A bundle is a directory written by `edgert compile`: manifest.json, lib/model.so
 * (a TVM Relax executable), the TVM runtime libraries, golden inputs/outputs.
 *
 *   edgert_model* m = NULL;
 *   if (edgert_open("model.edgert", &m) != EDGERT_OK) {
 *     fprintf(stderr, "%s\n", edgert_last_error());
 *     return 1;
 *   }
 *   edgert_set_input(m, 0, pixels, sizeof pixels);
 *   edgert_run(m);
 *   edgert_get_output(m, 0, scores, sizeof scores);
 *   edgert_close(m);
 *
 * Tensors are dense, C-ordered, in the byte layout of the host (little-endian).
 * One model handle must not be used by two threads at the same time; separate
 * handles are independent.
 */
#ifndef EDGERT_H_
#define EDGERT_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The bundle format version this library reads. */
#define EDGERT_FORMAT_VERSION 1

/* Every function that can fail returns one of these; edgert_last_error() says why. */
typedef enum edgert_status {
  EDGERT_OK = 0,
  EDGERT_E_ARGUMENT = 1,  /* NULL pointer, index out of range, wrong byte count, input not set */
  EDGERT_E_BUNDLE = 2,    /* manifest missing or malformed, or a newer format version */
  EDGERT_E_INTEGRITY = 3, /* a file listed in the manifest is missing or its sha256 differs */
  EDGERT_E_ARCH = 4,      /* the bundle targets another architecture or OS */
  EDGERT_E_RUNTIME = 5    /* TVM failed to load or run the model */
} edgert_status;

/* An opened bundle: the loaded model, its input and output buffers. */
typedef struct edgert_model edgert_model;

/* Description of one input or output. Pointers stay valid until edgert_close. */
typedef struct edgert_tensor_info {
  const char* name;
  const char* dtype;    /* "float32", "float16", "float64", "int8", "uint8", "int16",
                           "int32", "int64" or "bool" */
  int32_t ndim;
  const int64_t* shape; /* ndim entries */
  size_t nbytes;        /* bytes of the whole tensor */
  const char* golden;   /* bundle-relative path of its golden .npy, or NULL if none */
} edgert_tensor_info;

/* Message of the last failed call on this thread ("" if none). Valid until the next call. */
const char* edgert_last_error(void);

/* Opens the bundle directory `bundle_dir`. Checks, before loading any native code, that the
 * manifest's format_version is supported, that the target architecture and OS are those this
 * library was built for, that every tensor it declares fits in this device's memory, and that
 * every file listed in the manifest is a regular file inside the bundle (no symlink or ".."
 * leading out) with its recorded sha256; golden files must be among the listed ones.
 * Then loads lib/model.so and initialises the TVM virtual machine on the target device.
 * On success stores a new handle in *out; free it with edgert_close. */
edgert_status edgert_open(const char* bundle_dir, edgert_model** out);

/* Frees the model and everything it owns. NULL is ignored. */
void edgert_close(edgert_model* model);

/* Number of model inputs / outputs (0 for NULL). */
size_t edgert_num_inputs(const edgert_model* model);
size_t edgert_num_outputs(const edgert_model* model);

/* Describes input / output `index` (manifest order) into *info. */
edgert_status edgert_input_info(const edgert_model* model, size_t index, edgert_tensor_info* info);
edgert_status edgert_output_info(const edgert_model* model, size_t index, edgert_tensor_info* info);

/* Copies `nbytes` bytes from `data` into input `index`; nbytes must equal the input's nbytes.
 * Inputs keep their value across runs. */
edgert_status edgert_set_input(edgert_model* model, size_t index, const void* data, size_t nbytes);

/* Runs the model once on the current inputs; every input must have been set. */
edgert_status edgert_run(edgert_model* model);

/* Copies output `index` of the last run into `data`; nbytes must equal the output's nbytes. */
edgert_status edgert_get_output(const edgert_model* model, size_t index, void* data, size_t nbytes);

/* Called around every function the model's virtual machine calls: compiled kernels
 * ("fused_conv2d_add_relu") and VM builtins ("vm.builtin.alloc_storage"). `before` is 1 just
 * before the call and 0 just after it; `function` stays valid until edgert_close. Calls nest when
 * one Relax function calls another. For profiling: keep the hook cheap, it runs inside edgert_run. */
typedef void (*edgert_call_hook)(void* user, const char* function, int before);

/* Installs `hook` (with `user` passed back to it) for the following edgert_run calls; a NULL
 * hook stops the calls. Runs before the first hook pay nothing for this; once one was set, the
 * VM keeps a small cost per call until edgert_close (time runs before installing a hook). */
edgert_status edgert_set_call_hook(edgert_model* model, edgert_call_hook hook, void* user);

/* ---- Streams: bundles of continual step models (`edgert continual`, then `edgert compile`) ----
 *
 * A step model takes one frame and returns one time step. Its state tensors are inputs named
 * state_in_* and outputs named state_out_* (listed in the manifest's "stream" section). In
 * stream mode the library carries them: after each step the state outputs become the next step's
 * state inputs inside the library (the tensors are handed over, not copied), so the caller sets
 * only the frame inputs and reads the outputs:
 *
 *   edgert_stream_reset(m);                          (edgert_open does this for step models)
 *   for (;;) {
 *     edgert_set_input(m, 0, frame, sizeof frame);   (input 0: the frame; see edgert_input_info)
 *     int emitted = 0;
 *     edgert_stream_step(m, &emitted);
 *     if (emitted) edgert_get_output(m, 0, scores, sizeof scores);
 *   }
 */

/* 1 if the bundle is a step model with state tensors, else 0 (also for NULL). */
int edgert_is_stream(const edgert_model* model);

/* Frames before the first valid output (`delay`) and frames between valid outputs (`stride`). */
edgert_status edgert_stream_info(const edgert_model* model, int64_t* delay, int64_t* stride);

/* Starts a new stream: every state tensor zero, the frame count back to 0. */
edgert_status edgert_stream_reset(edgert_model* model);

/* Runs one step on the frame inputs set with edgert_set_input and keeps the new state. `*emitted`
 * (NULL allowed) becomes 1 when this step's outputs are valid (past the delay, on the stride) and
 * 0 during warm-up or between strided outputs. */
edgert_status edgert_stream_step(edgert_model* model, int* emitted);

#ifdef __cplusplus
}
#endif

#endif /* EDGERT_H_ */
