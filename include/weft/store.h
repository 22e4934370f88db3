/*
 * weft/store.h — durable workflow runs in SQLite.
 *
 * A run is one execution of a Lua workflow script. As the orchestrator builds
 * the run's graph it records each call (its deterministic key, function name,
 * a summary of its rendered prompt) and, when a call completes, its output
 * text and token counts. Each write is its own transaction and is committed
 * before the function returns.
 *
 * Durability: the database is in WAL mode with synchronous=NORMAL. A
 * transaction that has been committed survives the process being killed
 * (kill -9, abort, a crash) — every weft_store_call_complete() that returned 0
 * is there when the file is reopened. An OS crash or power loss may lose the
 * last few commits (never corrupting the file); set WEFT_DB_SYNC=full in the
 * environment to fsync every commit instead.
 *
 * Resume: `weft run --resume RUN_ID` re-executes the script from the start.
 * Each call computes its key (hash of template, rendered inputs, sampling
 * parameters and ordinal); when weft_store_call_lookup() finds a completed
 * value for (run, key) it is served from the store, otherwise the call goes
 * to the engine and weft_store_call_complete() records it. Failed calls have
 * no completed value, so a resume recomputes them. The key does not hold
 * the model: the run does — a run records the model's identity and a resume
 * with another model is refused (weft_store_run_resume_with), so every value
 * a run serves was computed by the model the run is computed by.
 *
 *   weft_store *s;  weft_store_open(NULL, 0, &s);
 *   int64_t run;    weft_store_run_begin(s, "map.lua", hash, "{\"n\":\"3\"}", &run);
 *   weft_store_call_add(s, run, key, "summarize", prompt_hash);
 *   if (weft_store_call_lookup(s, run, key, &text, &len, NULL) == WEFT_ENOTFOUND) {
 *       ... compute ...
 *       weft_store_call_complete(s, run, key, text, len, &stats);
 *   }
 *   weft_store_run_finish(s, run, final_output, NULL);
 *   weft_store_close(s);
 *
 * Schema (one database per installation, shared with other modules later):
 *   weft_schema(component TEXT PRIMARY KEY, version INTEGER) — "runs" = 4
 *   runs(id INTEGER PRIMARY KEY AUTOINCREMENT, script_path, script_hash,
 *        args_json, status 'running'|'finished'|'failed', started_at,
 *        finished_at (unix seconds, REAL), pid, resumes, output, error,
 *        sandbox, mem_limit, instr_limit, time_limit — weft_store_run_limits,
 *        model_hash, model_path — the model, NULL if not recorded,
 *        active_s, attempt_at — weft_store_run.active_seconds and
 *        .attempt_started_at)
 *   calls(run_id, key, fn, summary, status 'pending'|'running'|'done'|'failed',
 *        output BLOB, n_prompt, n_cached, n_generated, seconds,
 *        completed_at, error; UNIQUE(run_id, key))
 *   edges(run_id, src, dst; PRIMARY KEY(run_id, src, dst))
 * The file is marked with PRAGMA application_id 0x77656674 ("weft").
 * An older version is upgraded in place when the file is opened for writing
 * and read as it is when opened read-only; its runs have none of what it did
 * not record: version 1 no limits, versions 1 and 2 no model.
 *
 * Liveness: the process executing a run (the one that began or last resumed
 * it, until it finishes the run or closes the store) holds a lock on byte
 * `run id` of the file "<database>-runlock" (an open-file-description lock,
 * F_OFD_SETLK). The kernel releases it when the process ends however it ends
 * (kill -9 included), so a run marked running whose lock nobody holds is
 * reported interrupted, whatever process has since been given the pid it
 * recorded. The lock file is opened close-on-exec: a program the script
 * starts does not keep the run "running" after weft is gone.
 *
 * Threading: a weft_store is one SQLite connection with cached prepared
 * statements; use it from one thread at a time. Other threads and processes
 * open their own; WAL lets readers run while one writer writes, and writers
 * wait for each other up to a busy timeout (5 s) before WEFT_EBUSY.
 *
 * Errors: every function returns 0 or a negative WEFT_E* code and sets
 * weft_last_error(). A file that is not a SQLite database, is corrupt, or is
 * some other program's database gives WEFT_EFORMAT with the path in the
 * message; a newer schema than this weft knows gives WEFT_EUNSUPPORTED. A
 * value over SQLite's length limit (SQLITE_LIMIT_LENGTH, a billion bytes by
 * default) gives WEFT_ERANGE, and nothing is written.
 */
#ifndef WEFT_STORE_H
#define WEFT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_store weft_store;

/* weft_store_open flags. */
enum {
    /* Open an existing database read-only; a missing file is WEFT_ENOTFOUND
     * (nothing is created, nothing is written). For listing. A WAL database
     * needs its -shm file; where that cannot be created or written (a
     * read-only directory) the file is opened immutable instead
     * (weft_store_immutable()). */
    WEFT_STORE_READONLY = 1,
};

/* The database path used when none is given: $WEFT_DB, else
 * $XDG_DATA_HOME/weft/weft.db, else ~/.local/share/weft/weft.db. Writes it
 * into buf. WEFT_ERANGE if it does not fit, WEFT_ENOTFOUND if there is no
 * home directory. */
WEFT_API int weft_store_default_path(char *buf, size_t n);

/* Opens (creating the file and its parent directories, mode 0700, unless
 * WEFT_STORE_READONLY) the database at `path` (NULL: the default path),
 * sets WAL, a busy timeout and foreign keys, and creates or checks the schema;
 * opens "<path>-runlock" (created unless READONLY) for the runs' locks.
 * *out is owned by the caller: weft_store_close() it.
 * Errors: WEFT_EIO (cannot create or open), WEFT_EFORMAT (not a SQLite
 * database, corrupt, or a foreign one), WEFT_EUNSUPPORTED (newer schema),
 * WEFT_ENOTFOUND (READONLY and no file), WEFT_EBUSY, WEFT_ENOMEM. */
WEFT_API int weft_store_open(const char *path, int flags, weft_store **out);
/* Finalizes statements and closes the connection; the locks of the runs `s`
 * holds are released (they read as interrupted unless finished). NULL is a
 * no-op. */
WEFT_API void weft_store_close(weft_store *s);
/* The path the store was opened with. Borrowed; valid until close. */
WEFT_API const char *weft_store_path(const weft_store *s);
/* True when a READONLY store could not use the WAL (its -shm could not be
 * created or written, as in a read-only directory) and reads the database
 * file as an immutable snapshot: commits still in a -wal file beside it
 * (a writer that has not checkpointed them yet) are not seen. */
WEFT_API bool weft_store_immutable(const weft_store *s);

/* Hex of XXH3-128 of `len` bytes: 32 hex digits + NUL. For script hashes and
 * call keys. */
#define WEFT_STORE_HASH_HEX 33
WEFT_API void weft_store_hash_hex(const void *data, size_t len, char out[WEFT_STORE_HASH_HEX]);

/* ---- runs ---------------------------------------------------------------- */

typedef enum weft_run_status {
    WEFT_RUN_RUNNING = 0,
    WEFT_RUN_FINISHED = 1,
    WEFT_RUN_FAILED = 2,
    /* Never stored: reported by list/get for a run still marked running whose
     * lock no process holds (see Liveness above) — killed or crashed;
     * resumable. When the lock file exists but cannot be opened (another
     * user's database) the recorded pid is tested instead. */
    WEFT_RUN_INTERRUPTED = 3,
} weft_run_status;

/* "running", "finished", "failed", "interrupted". Never NULL. */
WEFT_API const char *weft_run_status_name(weft_run_status st);

/* The limits a run's script runs under (`weft run --sandbox`, its caps and
 * --time-limit), recorded with the run so that a resume applies them again:
 * an untrusted script stays sandboxed when it is resumed. */
typedef struct weft_store_run_limits {
    bool sandboxed;      /* the restricted Lua library of weft/sandbox.h */
    int64_t mem_limit;   /* bytes the Lua state may hold; 0 = no cap */
    int64_t instr_limit; /* Lua VM instructions; 0 = no budget */
    double time_limit;   /* seconds of wall clock; 0 = none */
} weft_store_run_limits;

/* What a run executes. Borrowed by the calls that take it. */
typedef struct weft_store_run_spec {
    const char *script_path; /* required (weft run records an absolute path) */
    const char *script_hash; /* NULL: "" */
    const char *args_json;   /* a JSON object or array; NULL: "{}" */
    weft_store_run_limits limits; /* no negative values */
    /* The model the run's calls are computed by: its identity (weft run
     * records weft_model_fingerprint() in hex) and, for messages, its path.
     * NULL: none recorded (a resume keeps the recorded one). */
    const char *model_hash;
    const char *model_path; /* ignored without model_hash */
} weft_store_run_spec;

typedef struct weft_store_run {
    int64_t id;
    weft_run_status status;
    char *script_path;     /* as given to run_begin, or to the last resume_with */
    char *script_hash;     /* "" if none was given */
    char *args_json;       /* JSON text; "{}" if none was given */
    char *output;          /* final output; NULL if none (and always NULL in lists) */
    char *error;           /* error text of a failed run; NULL if none */
    double started_at;     /* unix seconds */
    double finished_at;    /* unix seconds; 0 while running or interrupted */
    int64_t pid;           /* process that began or last resumed the run */
    int32_t resumes;       /* times resumed */
    int64_t calls_total;   /* calls recorded in the graph */
    int64_t calls_done;    /* of those, completed with a value */
    int64_t calls_failed;
    int64_t tokens_generated; /* sum over completed calls */
    weft_store_run_limits limits; /* as recorded; none for a run of schema version 1 */
    char *model_hash;      /* the model's identity (spec.model_hash); NULL if none recorded */
    char *model_path;      /* the model's path as recorded; NULL if none */
    /* Seconds the run was active: the sum over its attempts (the first and
     * each resume) that have ended, leaving out the time between a crash
     * and the resume; an interrupted attempt counts until the last call it
     * recorded. Not counting the current attempt of a running run. For a
     * run recorded before this was (schema < 4): finished_at - started_at. */
    double active_seconds;
    double attempt_started_at; /* unix seconds: when the current (or last) attempt began */
} weft_store_run;

/* Starts a run of `spec`: status running, started now, pid = getpid(), its
 * lock held by `s` (in the same transaction).
 * *run_id gets the new id (positive, never reused). WEFT_EINVAL for a spec
 * with no script path, arguments that are not a JSON object or array, or a
 * negative limit; WEFT_ERANGE for a value over SQLite's length limit. */
WEFT_API int weft_store_run_begin_with(weft_store *s, const weft_store_run_spec *spec,
                                       int64_t *run_id);
/* weft_store_run_begin_with() of {script_path, script_hash, args_json} and
 * no limits. */
WEFT_API int weft_store_run_begin(weft_store *s, const char *script_path,
                                  const char *script_hash, const char *args_json,
                                  int64_t *run_id);

/* Marks a run running again for `weft run --resume`: resumes + 1, pid =
 * getpid(), its lock taken by `s`, finished_at, output and error cleared; its calls and their values
 * are kept. Call it once the resume can start (script read, model loaded):
 * a finished run's output is gone from here on. Unless `spec` is NULL the
 * run's script path, hash, arguments and limits are replaced by `spec`'s in
 * the same transaction, so that the record tells what the resumed run
 * executes. If `info` is not NULL it is filled as by weft_store_run_get()
 * (before the update: it tells what the run was). A finished run may be
 * resumed too: every call is then served from the store.
 * Errors: WEFT_ENOTFOUND (no such run), WEFT_EBUSY (another store — another
 * process, or another weft_store of this one — holds its lock), WEFT_EINVAL (a bad spec, or one whose limits are looser than
 * those of a run recorded as sandboxed: no sandbox, or a larger memory cap,
 * instruction budget or time limit — a resume may tighten a sandbox, never
 * loosen it; or one whose model_hash is not the one the run was recorded
 * with — its stored values are another model's; the message names both),
 * WEFT_ERANGE (a value over SQLite's length limit). On error nothing
 * changed. */
WEFT_API int weft_store_run_resume_with(weft_store *s, int64_t run_id,
                                        const weft_store_run_spec *spec, weft_store_run *info);
/* weft_store_run_resume_with() with no spec: the run keeps what it was
 * recorded with. */
WEFT_API int weft_store_run_resume(weft_store *s, int64_t run_id, weft_store_run *info);

/* Ends a run: finished when `error` is NULL, else failed with that error
 * text; `s` releases its lock. `output` (the final output, may be NULL) is kept for
 * weft_store_run_get(). WEFT_ENOTFOUND if there is no such run. */
WEFT_API int weft_store_run_finish(weft_store *s, int64_t run_id, const char *output,
                                   const char *error);

/* Fills *out with one run, output included. The strings in *out are owned by
 * the caller: weft_store_run_clear() them. WEFT_ENOTFOUND if no such run. */
WEFT_API int weft_store_run_get(weft_store *s, int64_t run_id, weft_store_run *out);
/* Frees the strings of *r and zeroes it. */
WEFT_API void weft_store_run_clear(weft_store_run *r);

/* The newest `limit` runs (0: all), newest first, output left NULL. *out is an
 * array of *n runs owned by the caller: weft_store_runs_free(*out, *n). With no
 * runs, *out is NULL and *n is 0. */
WEFT_API int weft_store_runs_list(weft_store *s, int limit, weft_store_run **out, size_t *n);
WEFT_API void weft_store_runs_free(weft_store_run *runs, size_t n);

/* ---- the graph and its values -------------------------------------------- */

typedef enum weft_call_status {
    WEFT_CALL_PENDING = 0, /* in the graph, not sent yet */
    WEFT_CALL_RUNNING = 1, /* sent to the engine */
    WEFT_CALL_DONE = 2,    /* completed; has a value */
    WEFT_CALL_FAILED = 3,
} weft_call_status;

WEFT_API const char *weft_call_status_name(weft_call_status st);

typedef struct weft_store_call_stats {
    int32_t n_prompt;    /* prompt tokens */
    int32_t n_cached;    /* of those, KV reused (prefix cache) rather than computed */
    int32_t n_generated; /* tokens generated */
    double seconds;      /* wall time from submit to completion */
} weft_store_call_stats;

/* Adds call `key` (non-empty, at most 1024 bytes) to a run's graph as
 * pending. `fn` (function name) and `summary` (rendered-prompt hash or a
 * short summary of the inputs) may be NULL. Adding a key the run already has
 * is not an error and changes nothing — on resume every call is added again
 * and keeps its stored status and value. WEFT_ENOTFOUND: no such run. */
WEFT_API int weft_store_call_add(weft_store *s, int64_t run_id, const char *key,
                                 const char *fn, const char *summary);

/* Optional: records an edge of the graph, `src` call's output feeds `dst`
 * call. Duplicates are ignored. */
WEFT_API int weft_store_edge_add(weft_store *s, int64_t run_id, const char *src,
                                 const char *dst);

/* Sets a call's status to running or failed (`error` is its text, may be
 * NULL); adds the call if it is not in the graph yet. To mark a call done use
 * weft_store_call_complete(). WEFT_EINVAL for WEFT_CALL_DONE. */
WEFT_API int weft_store_call_set_status(weft_store *s, int64_t run_id, const char *key,
                                        weft_call_status st, const char *error);

/* Records a call's completed value — `output_len` bytes of `output` (any
 * bytes; the orchestrator stores a JSON object of output name -> text) — and
 * its stats (`stats` may be NULL), marking it done. Adds the call if it is not
 * in the graph yet; overwrites an earlier value. Committed (durable as
 * described at the top) when this returns 0. */
WEFT_API int weft_store_call_complete(weft_store *s, int64_t run_id, const char *key,
                                      const char *output, size_t output_len,
                                      const weft_store_call_stats *stats);

/* Looks up the completed value of (run, key). On success *output is a copy,
 * NUL-terminated (the NUL is not counted in *output_len), owned by the caller:
 * weft_free() it; `stats` (may be NULL) gets the stats recorded with it.
 * WEFT_ENOTFOUND if the call is not in the run or has not completed. */
WEFT_API int weft_store_call_lookup(weft_store *s, int64_t run_id, const char *key,
                                    char **output, size_t *output_len,
                                    weft_store_call_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
