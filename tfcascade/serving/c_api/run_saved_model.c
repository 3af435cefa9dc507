/*
 * run_saved_model: load a SavedModel through the TensorFlow C API and run tensors of it.
 *
 * TF_LoadSessionFromSavedModel is the C++ SavedModel loader (LoadSavedModel) that TF Serving
 * uses: it imports the MetaGraphDef of the given tags, restores the variables and runs the
 * init / main / asset (table initializer) ops. This program then feeds and fetches graph tensors
 * with TF_SessionRun, which lets a test compare the C++ loader's results with the Python
 * `tf.saved_model.load` ones without TF Serving's binary.
 *
 * Usage:
 *   run_saved_model SAVED_MODEL_DIR [SPEC_FILE]      (the spec is read from stdin without one,
 *                                                     or when SPEC_FILE is "-")
 *
 * Spec: one directive a line; blank lines and lines starting with '#' are skipped.
 *   tag <tag>                                   MetaGraphDef tag (repeatable; default "serve")
 *   in  <tensor> <dtype> <rank> <d0> ... <path> feed <tensor> (e.g. serving_default_user_id:0)
 *                                               with the raw native-endian row-major data of
 *                                               <path> (exactly prod(d) * sizeof(dtype) bytes)
 *   out <tensor> <path>                         fetch <tensor> (e.g. StatefulPartitionedCall:1)
 *                                               and write it to <path>
 * The path is the rest of the line, so it may hold spaces. A tensor without ":<index>" is
 * output 0 of the operation. dtype: float16 float32 float64 int8 int16 int32 int64 uint8
 * uint16 uint32 uint64 bool (string tensors are not supported).
 *
 * Output file: the 4 bytes "TFCR", int32 dtype (the TF_DataType code, equal to DataType in
 * types.proto), int32 rank, rank x int64 dims, then the raw data (native byte order).
 *
 * Exit status: 0 success, 2 usage or spec error, 3 SavedModel load failure, 4 graph or run
 * failure, 5 file I/O failure. Every failure prints one "run_saved_model: ..." line on stderr.
 *
 * Build (TFD = dirname(tensorflow.__file__)):
 *   gcc -o run_saved_model run_saved_model.c -I$TFD/include -L$TFD \
 *       -l:libtensorflow_cc.so.2 -l:libtensorflow_framework.so.2 -Wl,-rpath,$TFD
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensorflow/c/c_api.h"

enum { EXIT_USAGE = 2, EXIT_LOAD = 3, EXIT_RUN = 4, EXIT_IO = 5 };

#define OUTPUT_MAGIC "TFCR"

typedef struct {
  char *tensor;  /* "op:index" as written in the spec */
  char *path;
  TF_DataType dtype;
  int rank;
  int64_t *dims;
} Feed;

typedef struct {
  char *tensor;
  char *path;
} Fetch;

typedef struct {
  char **tags;
  int ntags;
  Feed *feeds;
  int nfeeds;
  Fetch *fetches;
  int nfetches;
} Spec;

static const struct {
  const char *name;
  TF_DataType dtype;
} kDtypes[] = {
    {"float16", TF_HALF},   {"half", TF_HALF},      {"float32", TF_FLOAT}, {"float", TF_FLOAT},
    {"float64", TF_DOUBLE}, {"double", TF_DOUBLE},  {"int8", TF_INT8},     {"int16", TF_INT16},
    {"int32", TF_INT32},    {"int64", TF_INT64},    {"uint8", TF_UINT8},   {"uint16", TF_UINT16},
    {"uint32", TF_UINT32},  {"uint64", TF_UINT64},  {"bool", TF_BOOL},
};

static void fail_message(const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  fputs("run_saved_model: ", stderr);
  vfprintf(stderr, fmt, args);
  fputc('\n', stderr);
  va_end(args);
}

static char *copy_string(const char *text, size_t len) {
  char *out = malloc(len + 1);
  if (out == NULL) return NULL;
  memcpy(out, text, len);
  out[len] = '\0';
  return out;
}

static int parse_dtype(const char *name, TF_DataType *dtype) {
  for (size_t i = 0; i < sizeof(kDtypes) / sizeof(kDtypes[0]); ++i) {
    if (strcmp(name, kDtypes[i].name) == 0) {
      *dtype = kDtypes[i].dtype;
      return 1;
    }
  }
  return 0;
}

static const char *dtype_name(TF_DataType dtype) {
  for (size_t i = 0; i < sizeof(kDtypes) / sizeof(kDtypes[0]); ++i) {
    if (kDtypes[i].dtype == dtype) return kDtypes[i].name;
  }
  return "unsupported";
}

static void free_spec(Spec *spec) {
  for (int i = 0; i < spec->ntags; ++i) free(spec->tags[i]);
  for (int i = 0; i < spec->nfeeds; ++i) {
    free(spec->feeds[i].tensor);
    free(spec->feeds[i].path);
    free(spec->feeds[i].dims);
  }
  for (int i = 0; i < spec->nfetches; ++i) {
    free(spec->fetches[i].tensor);
    free(spec->fetches[i].path);
  }
  free(spec->tags);
  free(spec->feeds);
  free(spec->fetches);
  memset(spec, 0, sizeof(*spec));
}

/* Cursor over one spec line: whitespace-separated tokens, then "the rest of the line". */
typedef struct {
  char *pos;
} Cursor;

static void skip_space(Cursor *c) {
  while (*c->pos == ' ' || *c->pos == '\t') ++c->pos;
}

/* Next token, NUL-terminated in place; NULL at the end of the line. */
static char *next_token(Cursor *c) {
  skip_space(c);
  if (*c->pos == '\0') return NULL;
  char *start = c->pos;
  while (*c->pos != '\0' && *c->pos != ' ' && *c->pos != '\t') ++c->pos;
  if (*c->pos != '\0') *c->pos++ = '\0';
  return start;
}

/* The rest of the line without surrounding blanks; NULL when empty. */
static char *rest_of_line(Cursor *c) {
  skip_space(c);
  if (*c->pos == '\0') return NULL;
  char *start = c->pos;
  char *end = start + strlen(start);
  while (end > start && (end[-1] == ' ' || end[-1] == '\t')) --end;
  *end = '\0';
  return start;
}

static int parse_int64(const char *text, int64_t *value) {
  char *end = NULL;
  errno = 0;
  long long v = strtoll(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0') return 0;
  *value = (int64_t)v;
  return 1;
}

static int grow(void **array, int count, size_t item_size) {
  void *bigger = realloc(*array, (size_t)(count + 1) * item_size);
  if (bigger == NULL) return 0;
  *array = bigger;
  return 1;
}

/* Parses one "in" line (after the keyword). Returns 0 and prints why on error. */
static int parse_feed(Cursor *c, int lineno, Feed *feed) {
  memset(feed, 0, sizeof(*feed));
  const char *tensor = next_token(c);
  const char *dtype = next_token(c);
  const char *rank_text = next_token(c);
  if (tensor == NULL || dtype == NULL || rank_text == NULL) {
    fail_message("spec line %d: expected 'in <tensor> <dtype> <rank> <dims...> <path>'", lineno);
    return 0;
  }
  if (!parse_dtype(dtype, &feed->dtype)) {
    fail_message("spec line %d: unknown dtype '%s' for input %s", lineno, dtype, tensor);
    return 0;
  }
  int64_t rank = 0;
  if (!parse_int64(rank_text, &rank) || rank < 0 || rank > 254) {
    fail_message("spec line %d: bad rank '%s' for input %s (0..254)", lineno, rank_text, tensor);
    return 0;
  }
  feed->rank = (int)rank;
  feed->tensor = copy_string(tensor, strlen(tensor));
  feed->dims = malloc(sizeof(int64_t) * (size_t)(rank > 0 ? rank : 1));
  if (feed->tensor == NULL || feed->dims == NULL) {
    fail_message("out of memory");
    return 0;
  }
  for (int d = 0; d < feed->rank; ++d) {
    const char *dim = next_token(c);
    if (dim == NULL || !parse_int64(dim, &feed->dims[d]) || feed->dims[d] < 0) {
      fail_message("spec line %d: input %s needs %d non-negative dims, dim %d is '%s'", lineno,
                   feed->tensor, feed->rank, d, dim == NULL ? "(missing)" : dim);
      return 0;
    }
  }
  const char *path = rest_of_line(c);
  if (path == NULL) {
    fail_message("spec line %d: input %s has no data file path", lineno, feed->tensor);
    return 0;
  }
  feed->path = copy_string(path, strlen(path));
  if (feed->path == NULL) {
    fail_message("out of memory");
    return 0;
  }
  return 1;
}

static int parse_spec(FILE *in, const char *source, Spec *spec) {
  memset(spec, 0, sizeof(*spec));
  char *line = NULL;
  size_t capacity = 0;
  ssize_t len;
  int lineno = 0;
  int ok = 1;
  while (ok && (len = getline(&line, &capacity, in)) != -1) {
    ++lineno;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
    Cursor c = {line};
    const char *keyword = next_token(&c);
    if (keyword == NULL || keyword[0] == '#') continue;
    if (strcmp(keyword, "tag") == 0) {
      const char *tag = next_token(&c);
      if (tag == NULL || next_token(&c) != NULL) {
        fail_message("spec line %d: expected 'tag <tag>'", lineno);
        ok = 0;
      } else if (!grow((void **)&spec->tags, spec->ntags, sizeof(char *)) ||
                 (spec->tags[spec->ntags] = copy_string(tag, strlen(tag))) == NULL) {
        fail_message("out of memory");
        ok = 0;
      } else {
        ++spec->ntags;
      }
    } else if (strcmp(keyword, "in") == 0) {
      if (!grow((void **)&spec->feeds, spec->nfeeds, sizeof(Feed))) {
        fail_message("out of memory");
        ok = 0;
      } else {
        /* Counted even when invalid so that free_spec releases what was parsed. */
        ok = parse_feed(&c, lineno, &spec->feeds[spec->nfeeds]);
        ++spec->nfeeds;
      }
    } else if (strcmp(keyword, "out") == 0) {
      const char *tensor = next_token(&c);
      const char *path = tensor == NULL ? NULL : rest_of_line(&c);
      if (path == NULL) {
        fail_message("spec line %d: expected 'out <tensor> <path>'", lineno);
        ok = 0;
      } else if (!grow((void **)&spec->fetches, spec->nfetches, sizeof(Fetch))) {
        fail_message("out of memory");
        ok = 0;
      } else {
        Fetch *fetch = &spec->fetches[spec->nfetches++];
        fetch->tensor = copy_string(tensor, strlen(tensor));
        fetch->path = copy_string(path, strlen(path));
        if (fetch->tensor == NULL || fetch->path == NULL) {
          fail_message("out of memory");
          ok = 0;
        }
      }
    } else {
      fail_message("spec line %d: unknown directive '%s' (expected tag, in or out)", lineno,
                   keyword);
      ok = 0;
    }
  }
  if (ok && ferror(in)) {
    fail_message("cannot read the spec from %s: %s", source, strerror(errno));
    ok = 0;
  }
  free(line);
  if (ok && spec->nfetches == 0) {
    fail_message("the spec (%s) has no 'out' line: nothing to fetch", source);
    ok = 0;
  }
  if (ok && spec->ntags == 0) {
    spec->tags = malloc(sizeof(char *));
    if (spec->tags == NULL || (spec->tags[0] = copy_string("serve", 5)) == NULL) {
      fail_message("out of memory");
      ok = 0;
    } else {
      spec->ntags = 1;
    }
  }
  return ok;
}

/* Resolves "op:index" in the graph. Returns 0 and prints why on error. */
static int resolve_tensor(TF_Graph *graph, const char *tensor, const char *role, TF_Output *out) {
  const char *colon = strrchr(tensor, ':');
  int64_t index = 0;
  size_t op_len = strlen(tensor);
  if (colon != NULL) {
    if (!parse_int64(colon + 1, &index) || index < 0) {
      fail_message("%s tensor '%s': bad output index after ':'", role, tensor);
      return 0;
    }
    op_len = (size_t)(colon - tensor);
  }
  char *op_name = copy_string(tensor, op_len);
  if (op_name == NULL) {
    fail_message("out of memory");
    return 0;
  }
  TF_Operation *op = TF_GraphOperationByName(graph, op_name);
  if (op == NULL) {
    fail_message("%s tensor '%s': the loaded graph has no operation '%s'", role, tensor, op_name);
    free(op_name);
    return 0;
  }
  free(op_name);
  int outputs = TF_OperationNumOutputs(op);
  if (index >= outputs) {
    fail_message("%s tensor '%s': operation has %d output(s), index %lld is out of range", role,
                 tensor, outputs, (long long)index);
    return 0;
  }
  out->oper = op;
  out->index = (int)index;
  return 1;
}

/* Allocates the feed's tensor and fills it from its file. Returns NULL and prints on error. */
static TF_Tensor *load_feed(const Feed *feed, int *exit_code) {
  size_t item = TF_DataTypeSize(feed->dtype);
  size_t count = 1;
  for (int d = 0; d < feed->rank; ++d) {
    uint64_t dim = (uint64_t)feed->dims[d];
    if (dim != 0 && count > SIZE_MAX / item / dim) {
      fail_message("input %s: shape too large", feed->tensor);
      *exit_code = EXIT_USAGE;
      return NULL;
    }
    count *= (size_t)dim;
  }
  size_t nbytes = count * item;
  FILE *file = fopen(feed->path, "rb");
  if (file == NULL) {
    fail_message("input %s: cannot open %s: %s", feed->tensor, feed->path, strerror(errno));
    *exit_code = EXIT_IO;
    return NULL;
  }
  TF_Tensor *tensor = TF_AllocateTensor(feed->dtype, feed->dims, feed->rank, nbytes);
  if (tensor == NULL) {
    fail_message("input %s: cannot allocate %zu bytes", feed->tensor, nbytes);
    fclose(file);
    *exit_code = EXIT_RUN;
    return NULL;
  }
  size_t got = nbytes == 0 ? 0 : fread(TF_TensorData(tensor), 1, nbytes, file);
  int extra = fgetc(file) != EOF;
  int read_error = ferror(file);
  fclose(file);
  if (read_error || got != nbytes || extra) {
    fail_message("input %s: %s holds %s bytes, the %s shape needs exactly %zu", feed->tensor,
                 feed->path, read_error ? "unreadable" : (extra ? "more" : "fewer"),
                 dtype_name(feed->dtype), nbytes);
    TF_DeleteTensor(tensor);
    *exit_code = read_error ? EXIT_IO : EXIT_USAGE;
    return NULL;
  }
  return tensor;
}

static int write_fetch(const Fetch *fetch, const TF_Tensor *tensor) {
  TF_DataType dtype = TF_TensorType(tensor);
  if (dtype == TF_STRING || TF_DataTypeSize(dtype) == 0) {
    fail_message("output %s: dtype code %d is not supported (numeric and bool only)",
                 fetch->tensor, (int)dtype);
    return EXIT_RUN;
  }
  FILE *file = fopen(fetch->path, "wb");
  if (file == NULL) {
    fail_message("output %s: cannot create %s: %s", fetch->tensor, fetch->path, strerror(errno));
    return EXIT_IO;
  }
  int32_t header[2] = {(int32_t)dtype, (int32_t)TF_NumDims(tensor)};
  int ok = fwrite(OUTPUT_MAGIC, 1, 4, file) == 4 && fwrite(header, sizeof(header), 1, file) == 1;
  for (int d = 0; ok && d < header[1]; ++d) {
    int64_t dim = TF_Dim(tensor, d);
    ok = fwrite(&dim, sizeof(dim), 1, file) == 1;
  }
  size_t nbytes = TF_TensorByteSize(tensor);
  if (ok && nbytes > 0) ok = fwrite(TF_TensorData(tensor), 1, nbytes, file) == nbytes;
  if (fclose(file) != 0) ok = 0;
  if (!ok) {
    fail_message("output %s: cannot write %s: %s", fetch->tensor, fetch->path, strerror(errno));
    return EXIT_IO;
  }
  return 0;
}

static int run(const char *export_dir, const Spec *spec) {
  int code = 0;
  TF_Status *status = TF_NewStatus();
  TF_SessionOptions *options = TF_NewSessionOptions();
  TF_Graph *graph = TF_NewGraph();
  TF_Session *session = NULL;
  TF_Output *inputs = calloc((size_t)spec->nfeeds + 1, sizeof(TF_Output));
  TF_Tensor **input_values = calloc((size_t)spec->nfeeds + 1, sizeof(TF_Tensor *));
  TF_Output *outputs = calloc((size_t)spec->nfetches, sizeof(TF_Output));
  TF_Tensor **output_values = calloc((size_t)spec->nfetches, sizeof(TF_Tensor *));
  if (status == NULL || options == NULL || graph == NULL || inputs == NULL ||
      input_values == NULL || outputs == NULL || output_values == NULL) {
    fail_message("out of memory");
    code = EXIT_RUN;
    goto cleanup;
  }

  session = TF_LoadSessionFromSavedModel(options, NULL, export_dir,
                                         (const char *const *)spec->tags, spec->ntags, graph,
                                         NULL, status);
  if (TF_GetCode(status) != TF_OK || session == NULL) {
    fail_message("cannot load the SavedModel %s (tags:%s%s): %s", export_dir, spec->tags[0],
                 spec->ntags > 1 ? " ..." : "", TF_Message(status));
    session = NULL;
    code = EXIT_LOAD;
    goto cleanup;
  }

  for (int i = 0; i < spec->nfeeds; ++i) {
    const Feed *feed = &spec->feeds[i];
    if (!resolve_tensor(graph, feed->tensor, "input", &inputs[i])) {
      code = EXIT_RUN;
      goto cleanup;
    }
    TF_DataType expected = TF_OperationOutputType(inputs[i]);
    if (expected != feed->dtype) {
      fail_message("input %s: the graph expects %s (dtype code %d), the spec gives %s",
                   feed->tensor, dtype_name(expected), (int)expected, dtype_name(feed->dtype));
      code = EXIT_USAGE;
      goto cleanup;
    }
    input_values[i] = load_feed(feed, &code);
    if (input_values[i] == NULL) goto cleanup;
  }
  for (int i = 0; i < spec->nfetches; ++i) {
    if (!resolve_tensor(graph, spec->fetches[i].tensor, "output", &outputs[i])) {
      code = EXIT_RUN;
      goto cleanup;
    }
  }

  TF_SessionRun(session, NULL, inputs, input_values, spec->nfeeds, outputs, output_values,
                spec->nfetches, NULL, 0, NULL, status);
  if (TF_GetCode(status) != TF_OK) {
    fail_message("TF_SessionRun failed: %s", TF_Message(status));
    code = EXIT_RUN;
    goto cleanup;
  }
  for (int i = 0; i < spec->nfetches && code == 0; ++i) {
    code = write_fetch(&spec->fetches[i], output_values[i]);
  }

cleanup:
  if (output_values != NULL) {
    for (int i = 0; i < spec->nfetches; ++i) {
      if (output_values[i] != NULL) TF_DeleteTensor(output_values[i]);
    }
  }
  if (input_values != NULL) {
    for (int i = 0; i < spec->nfeeds; ++i) {
      if (input_values[i] != NULL) TF_DeleteTensor(input_values[i]);
    }
  }
  if (session != NULL) {
    TF_CloseSession(session, status);
    if (TF_GetCode(status) != TF_OK && code == 0) {
      fail_message("cannot close the session: %s", TF_Message(status));
      code = EXIT_RUN;
    }
    TF_DeleteSession(session, status);
  }
  free(output_values);
  free(outputs);
  free(input_values);
  free(inputs);
  if (graph != NULL) TF_DeleteGraph(graph);
  if (options != NULL) TF_DeleteSessionOptions(options);
  if (status != NULL) TF_DeleteStatus(status);
  return code;
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
    fprintf(stderr,
            "usage: %s SAVED_MODEL_DIR [SPEC_FILE]\n"
            "  spec lines (stdin without SPEC_FILE or with '-'):\n"
            "    tag <tag>\n"
            "    in <tensor> <dtype> <rank> <dims...> <path>\n"
            "    out <tensor> <path>\n",
            argc > 0 ? argv[0] : "run_saved_model");
    return EXIT_USAGE;
  }
  const char *source = argc == 3 ? argv[2] : "-";
  FILE *in = stdin;
  if (strcmp(source, "-") != 0) {
    in = fopen(source, "r");
    if (in == NULL) {
      fail_message("cannot open the spec %s: %s", source, strerror(errno));
      return EXIT_IO;
    }
  }
  Spec spec;
  int ok = parse_spec(in, strcmp(source, "-") == 0 ? "stdin" : source, &spec);
  if (in != stdin) fclose(in);
  int code = ok ? run(argv[1], &spec) : EXIT_USAGE;
  free_spec(&spec);
  return code;
}
