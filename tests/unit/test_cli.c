/* The weft CLI as a user meets it: help and usage exit codes, weft generate
 * on a tiny model, and bad input — corrupt, truncated or unsupported model
 * files, a prompt longer than the context — each a clear error and a
 * non-zero exit, never a crash (this runs under ASan in CI too). */
#include <sys/wait.h>

#include <jansson.h>

#include "test.h"
#include "tiny_model.h"
#include "cli_common.h" /* after tiny_model.h: its parameters named out */
#include "weft/store.h"

static char weft[4096];

/* Runs `weft ARGS`; see run_weft. */
static int run(const char *args) { return run_weft("", weft, args); }

static char good[256], trunc_path[256], badmagic[256], arch[256], iq2[256];

static int copy_prefix(const char *src, const char *dst, long n, int corrupt_magic)
{
    FILE *f = fopen(src, "rb"), *g = fopen(dst, "wb");
    if (!f || !g) return -1;
    char buf[4096];
    long done = 0;
    size_t r;
    while ((n < 0 || done < n) && (r = fread(buf, 1, sizeof buf, f)) > 0) {
        if (n >= 0 && done + (long)r > n) r = (size_t)(n - done);
        if (done == 0 && corrupt_magic) memcpy(buf, "GGUX", 4);
        fwrite(buf, 1, r, g);
        done += (long)r;
    }
    fclose(f);
    fclose(g);
    return 0;
}

TEST(help_and_usage)
{
    ASSERT_EQ_INT(run("--help"), 0);
    ASSERT_OUT_HAS("generate");
    ASSERT_OUT_HAS("serve");
    ASSERT_EQ_INT(run("nonsense"), 2);
    ASSERT_OUT_HAS("unknown command");
    ASSERT_OUT_HAS("usage: weft");
    ASSERT_EQ_INT(run("--version"), 0);
    ASSERT_OUT_HAS("weft 0."); /* the version, then the commit it was built from */
    ASSERT_OUT_HAS(" (commit ");
    ASSERT_EQ_INT(run(""), 2);
    ASSERT_EQ_INT(run("generate --help"), 0);
    ASSERT_OUT_HAS("--temp");
    ASSERT_EQ_INT(run("serve --help"), 0);
    ASSERT_OUT_HAS("--api-key");
    ASSERT_EQ_INT(run("serve --port 70000"), 2);
    ASSERT_OUT_HAS("bad option value");
    ASSERT_EQ_INT(run("serve --port 0 -m /nonexistent/model.gguf"), 1); /* fails before listening */
    ASSERT_EQ_INT(run("run"), 2);
    ASSERT_OUT_HAS("a script is required");
    ASSERT_EQ_INT(run("index"), 2);
    ASSERT_OUT_HAS("not available yet");
    ASSERT_EQ_INT(run("generate -m x.gguf"), 2); /* no prompt */
    ASSERT_OUT_HAS("prompt is required");
    ASSERT_EQ_INT(run("generate -p hi -n lots"), 2);
    /* options that would be ignored are refused */
    ASSERT_EQ_INT(run("generate -p hi --system brief"), 2);
    ASSERT_OUT_HAS("--system goes with --chat");
    ASSERT_EQ_INT(run("generate -p hi -f /dev/null"), 2);
    ASSERT_OUT_HAS("not both");
    ASSERT_EQ_INT(run("bench --shared-prefix 100 --prompt-max 400"), 2);
    ASSERT_OUT_HAS("do not go with it");
    ASSERT_EQ_INT(run("serve --no-prefix-cache --share-generated"), 2);
    ASSERT_OUT_HAS("needs the prefix cache");
}

TEST(generate_on_a_tiny_model)
{
    char args[1024];
    snprintf(args, sizeof args, "generate -m %s -p 'the the th' -n 12 --temp 0 -t 2", good);
    ASSERT_EQ_INT(run(args), 0);
    char first[65536];
    snprintf(first, sizeof first, "%s", out);
    ASSERT(strlen(first) > 1);
    ASSERT_EQ_INT(run(args), 0); /* greedy is deterministic */
    ASSERT_STR_EQ(out, first);
    /* same seed, same sample; sampled text may differ from greedy */
    snprintf(args, sizeof args, "generate -m %s -p 'the' -n 12 --temp 1.5 --seed 42 -t 1", good);
    ASSERT_EQ_INT(run(args), 0);
    snprintf(first, sizeof first, "%s", out);
    ASSERT_EQ_INT(run(args), 0);
    ASSERT_STR_EQ(out, first);
    snprintf(args, sizeof args, "generate -m %s -p 'the' -n 4 --temp 0 -v", good);
    ASSERT_EQ_INT(run(args), 0);
    ASSERT_OUT_HAS("tok/s");
}

TEST(bad_model_files_get_clear_errors)
{
    char args[1024];
    snprintf(args, sizeof args, "generate -m %s -p hi -n 2", trunc_path);
    ASSERT_EQ_INT(run(args), 1);
    ASSERT_OUT_HAS(trunc_path);
    snprintf(args, sizeof args, "generate -m %s -p hi -n 2", badmagic);
    ASSERT_EQ_INT(run(args), 1);
    ASSERT_OUT_HAS("magic");
    snprintf(args, sizeof args, "generate -m %s -p hi -n 2", arch);
    ASSERT_EQ_INT(run(args), 1);
    ASSERT_OUT_HAS("architecture 'falcon'");
    snprintf(args, sizeof args, "generate -m %s -p hi -n 2", iq2);
    ASSERT_EQ_INT(run(args), 1);
    ASSERT_OUT_HAS("iq2_xxs");
    ASSERT_EQ_INT(run("generate -m /nonexistent/m.gguf -p hi"), 1);
    ASSERT_OUT_HAS("/nonexistent/m.gguf");
}

TEST(prompt_longer_than_the_context_is_an_error)
{
    char args[2048];
    snprintf(args, sizeof args,
             "generate -m %s --ctx 16 -n 2 -p 'the the the the the the the the the the the the "
             "the the the the the the the the the the the the the the'",
             good);
    ASSERT_EQ_INT(run(args), 1);
    ASSERT_OUT_HAS("context size 16");
}

TEST(chat_without_a_template_says_how_to_go_raw)
{
    char args[1024];
    snprintf(args, sizeof args, "generate -m %s --chat -p hi -n 2", good);
    ASSERT_EQ_INT(run(args), 1);
    ASSERT_OUT_HAS("without --chat");
}

/* weft runs over a database the test fills through the store API. */
TEST(runs_lists_runs_and_reports_bad_databases)
{
    char dbp[512], args[1024];
    snprintf(dbp, sizeof dbp, "%s-runs.db", good);
    unlink(dbp);
    snprintf(args, sizeof args, "runs --db %s", dbp); /* nothing ran yet */
    ASSERT_EQ_INT(run(args), 0);
    ASSERT_OUT_HAS("no runs yet");
    snprintf(args, sizeof args, "runs --db %s --json", dbp);
    ASSERT_EQ_INT(run(args), 0);
    ASSERT_STR_EQ(out, "[]\n");

    weft_store *s;
    int64_t r1, r2;
    ASSERT_EQ_INT(weft_store_open(dbp, 0, &s), 0);
    ASSERT_EQ_INT(weft_store_run_begin(s, "examples/chain_summary.lua", "h", "{\"k\":\"v\"}", &r1), 0);
    weft_store_call_stats st = {.n_generated = 17};
    ASSERT_EQ_INT(weft_store_call_complete(s, r1, "a", "x", 1, &st), 0);
    ASSERT_EQ_INT(weft_store_call_add(s, r1, "b", "f", NULL), 0);
    ASSERT_EQ_INT(weft_store_run_finish(s, r1, "the summary", NULL), 0);
    ASSERT_EQ_INT(weft_store_run_begin(s, "broken.lua", NULL, NULL, &r2), 0);
    ASSERT_EQ_INT(weft_store_run_finish(s, r2, NULL, "call b: boom"), 0);
    weft_store_close(s);

    snprintf(args, sizeof args, "runs --db %s", dbp);
    ASSERT_EQ_INT(run(args), 0);
    ASSERT_OUT_HAS("STATUS");
    ASSERT_OUT_HAS("examples/chain_summary.lua");
    ASSERT_OUT_HAS("finished");
    ASSERT_OUT_HAS("failed");
    ASSERT_OUT_HAS("1/2");
    ASSERT(strstr(out, "broken.lua") < strstr(out, "chain_summary")); /* newest first */
    snprintf(args, sizeof args, "runs --db %s -n 1", dbp);
    ASSERT_EQ_INT(run(args), 0);
    ASSERT(!strstr(out, "chain_summary"));

    snprintf(args, sizeof args, "runs --db %s --json", dbp);
    ASSERT_EQ_INT(run(args), 0);
    json_error_t jerr;
    json_t *j = json_loads(out, 0, &jerr);
    ASSERT(j && json_is_array(j) && json_array_size(j) == 2);
    json_t *o = json_array_get(j, 1);
    ASSERT_EQ_INT(json_integer_value(json_object_get(o, "id")), r1);
    ASSERT_STR_EQ(json_string_value(json_object_get(o, "status")), "finished");
    ASSERT_EQ_INT(json_integer_value(json_object_get(o, "calls_done")), 1);
    ASSERT_EQ_INT(json_integer_value(json_object_get(o, "calls_total")), 2);
    ASSERT_EQ_INT(json_integer_value(json_object_get(o, "tokens_generated")), 17);
    ASSERT_STR_EQ(json_string_value(json_object_get(json_object_get(o, "args"), "k")), "v");
    ASSERT(json_is_number(json_object_get(o, "seconds")));
    ASSERT_STR_EQ(json_string_value(json_object_get(json_array_get(j, 0), "error")),
                  "call b: boom");
    json_decref(j);

    snprintf(args, sizeof args, "runs --db %s %lld", dbp, (long long)r1);
    ASSERT_EQ_INT(run(args), 0);
    ASSERT_OUT_HAS("the summary");
    ASSERT_OUT_HAS("{\"k\":\"v\"}");
    snprintf(args, sizeof args, "runs --db %s 999", dbp);
    ASSERT_EQ_INT(run(args), 1);
    ASSERT_OUT_HAS("no run 999");
    ASSERT_EQ_INT(run("runs --help"), 0);
    ASSERT_OUT_HAS("--json");
    ASSERT_EQ_INT(run("runs --limit x"), 2);
    ASSERT_EQ_INT(run("runs abc"), 2);
    const char *sfx[] = {"", "-wal", "-shm", "-runlock"}; /* the database and what SQLite and the store keep beside it */
    for (int i = 0; i < 4; i++) {
        snprintf(args, sizeof args, "%s%s", dbp, sfx[i]);
        unlink(args);
    }

    snprintf(args, sizeof args, "runs --db %s", good); /* a GGUF file, not a database */
    ASSERT_EQ_INT(run(args), 1);
    ASSERT_OUT_HAS("not a SQLite database");
}

int main(void)
{
    const char *bin = getenv("WEFT_BINARY_DIR");
    snprintf(weft, sizeof weft, "%s/weft", bin ? bin : ".");
    if (access(weft, X_OK) != 0) {
        fprintf(stderr, "no weft binary at %s\n", weft);
        return 1;
    }
    tiny_spec sp = tiny_default();
    sp.weight_type = WEFT_TYPE_Q4_1;
    sp.embd_type = WEFT_TYPE_Q8_0;
    tiny_path(good, sizeof good, "cli-good");
    tiny_path(trunc_path, sizeof trunc_path, "cli-trunc");
    tiny_path(badmagic, sizeof badmagic, "cli-magic");
    tiny_path(arch, sizeof arch, "cli-arch");
    tiny_path(iq2, sizeof iq2, "cli-iq2");
    if (tiny_write(&sp, good) || copy_prefix(good, trunc_path, 200000, 0) ||
        copy_prefix(good, badmagic, -1, 1))
        return 1;
    sp.arch_override = "falcon";
    if (tiny_write(&sp, arch)) return 1;
    sp = tiny_default();
    sp.weight_type = 16;
    if (tiny_write(&sp, iq2)) return 1;
    RUN(help_and_usage);
    RUN(generate_on_a_tiny_model);
    RUN(bad_model_files_get_clear_errors);
    RUN(prompt_longer_than_the_context_is_an_error);
    RUN(chat_without_a_template_says_how_to_go_raw);
    RUN(runs_lists_runs_and_reports_bad_databases);
    unlink(good);
    unlink(trunc_path);
    unlink(badmagic);
    unlink(arch);
    unlink(iq2);
    TEST_DONE();
}
