/* tests/model_common.h — helpers for tests on the real model: find it (skip
 * or fail when it is absent), read fixtures. Header-only. */
#ifndef WEFT_TESTS_MODEL_COMMON_H
#define WEFT_TESTS_MODEL_COMMON_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "weft/model.h"

/* Loads the default model. Returns NULL and sets *exit_code to 77 (skip) when
 * the file is absent, unless WEFT_REQUIRE_MODEL=1 (then 1). */
static weft_model *model_or_skip(int *exit_code)
{
    char path[4096];
    weft_default_model_path(path, sizeof path);
    const char *req = getenv("WEFT_REQUIRE_MODEL");
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "model %s not found (run scripts/setup.sh)\n", path);
        *exit_code = req && *req == '1' ? 1 : 77;
        return NULL;
    }
    weft_model *m = NULL;
    if (weft_model_load(path, &m) != 0) {
        fprintf(stderr, "cannot load %s: %s\n", path, weft_last_error());
        *exit_code = 1;
        return NULL;
    }
    return m;
}

/* Parses $WEFT_SOURCE_DIR/tests/fixtures/<name>. */
static json_t *fixture(const char *name)
{
    const char *src = getenv("WEFT_SOURCE_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/fixtures/%s", src ? src : ".", name);
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j) fprintf(stderr, "%s:%d: %s\n", path, err.line, err.text);
    return j;
}

/* Copies a JSON array of integers into a malloc'd int32 array. */
static int32_t *json_ints(json_t *arr, int32_t *n)
{
    *n = (int32_t)json_array_size(arr);
    int32_t *v = malloc(((size_t)*n + 1) * sizeof *v);
    for (int32_t i = 0; i < *n; i++) v[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
    return v;
}

#endif
