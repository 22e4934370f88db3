/* tests/fuzz/fuzz_vocab.h — the fuzz targets' tokenizer: the default
 * model's ($WEFT_MODEL, else the one scripts/setup.sh installs), loaded once
 * in LLVMFuzzerInitialize; exits 1 with a message when there is none. */
#ifndef WEFT_TESTS_FUZZ_VOCAB_H
#define WEFT_TESTS_FUZZ_VOCAB_H

#include <stdio.h>
#include <stdlib.h>

#include "weft/gguf.h"
#include "weft/model.h"
#include "weft/tokenizer.h"

static tok_vocab *fuzz_load_vocab(const char *who)
{
    char path[4096];
    weft_default_model_path(path, sizeof path);
    gguf_file *g = NULL;
    tok_vocab *v = NULL;
    if (gguf_open(path, &g) != 0 || tok_load(g, &v) != 0) {
        fprintf(stderr, "%s: cannot load the tokenizer of %s: %s\n", who, path, weft_last_error());
        exit(1);
    }
    gguf_close(g);
    return v;
}

#endif
