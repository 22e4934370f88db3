/* Durable runs on SQLite (see weft/store.h for the schema and the guarantees).
 *
 * Every write is a single statement in autocommit mode, so it is its own
 * transaction; the read-then-write operations (opening, beginning a run and
 * taking its lock, resume) take BEGIN IMMEDIATE so that two processes cannot
 * interleave them. Statements are prepared once per connection and cached.
 *
 * Liveness: the process executing a run holds an open-file-description lock
 * (F_OFD_SETLK) on byte `run id` of the file "<database>-runlock". The kernel
 * drops it when the process ends, however it ends, so a run marked running
 * whose byte nobody holds was interrupted — whatever process now has the pid
 * it recorded. */
#define _GNU_SOURCE /* F_OFD_SETLK, F_OFD_GETLK */
#include "weft/store.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pwd.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define STORE_APP_ID 0x77656674 /* "weft" */
#define RUNS_SCHEMA_VERSION 4
#define BUSY_TIMEOUT_MS 5000
#define MAX_KEY 1024

enum {
    ST_RUN_BEGIN,
    ST_RUN_FINISH,
    ST_RUN_GET,
    ST_RUN_RESUME,
    ST_RUNS_LIST,
    ST_CALL_ADD,
    ST_CALL_STATUS,
    ST_CALL_COMPLETE,
    ST_CALL_LOOKUP,
    ST_EDGE_ADD,
    ST_COUNT
};

/* The columns of a run row that get and list read (run_select_sql), in
 * this order. Columns a database of an older runs schema lacks read as
 * "none" when it is opened read-only (so not upgraded). */
enum {
    RC_ID, RC_STATUS, RC_SCRIPT_PATH, RC_SCRIPT_HASH, RC_ARGS, RC_ERROR, RC_STARTED,
    RC_FINISHED, RC_PID, RC_RESUMES, RC_CALLS, RC_DONE, RC_FAILED, RC_TOKENS,
    RC_SANDBOX, RC_MEM, RC_INSTR, RC_TIME, /* version 2 */
    RC_MODEL_HASH, RC_MODEL_PATH,          /* version 3 */
    RC_ACTIVE, RC_ATTEMPT,                 /* version 4 */
    RC_OUTPUT,                             /* get only; NULL in lists */
};

static const char *const stmt_sql[ST_COUNT] = {
    /* ?3..?11 are a run spec in both ST_RUN_BEGIN and ST_RUN_RESUME (bind_spec) */
    [ST_RUN_BEGIN] = "INSERT INTO runs(status, started_at, pid, script_path, script_hash, "
                     "args_json, sandbox, mem_limit, instr_limit, time_limit, model_hash, "
                     "model_path, attempt_at) "
                     "VALUES('running', ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?1)",
    /* the attempt's active time counts once: a run finished again (the
     * watchdog, a refused output) adds nothing */
    [ST_RUN_FINISH] = "UPDATE runs SET status = ?2, finished_at = ?3, output = ?4, error = ?5, "
                      "active_s = active_s + CASE WHEN status = 'running' "
                      "THEN max(?3 - attempt_at, 0) ELSE 0 END WHERE id = ?1",
    /* ?3..?11 NULL (no spec, or no model) keep what the run was recorded with;
     * ?12 is now. An interrupted attempt (still 'running') adds its active
     * time up to its last call recorded: when its process died is unknown. */
    [ST_RUN_RESUME] = "UPDATE runs SET active_s = active_s + CASE WHEN status = 'running' THEN "
                      "max(coalesce((SELECT max(max(coalesce(c.completed_at, 0), "
                      "coalesce(c.added_at, 0))) FROM calls c WHERE c.run_id = ?1), 0) "
                      "- attempt_at, 0) ELSE 0 END, attempt_at = ?12, "
                      "status = 'running', finished_at = NULL, "
                      "output = NULL, error = NULL, pid = ?2, resumes = resumes + 1, "
                      "script_path = coalesce(?3, script_path), "
                      "script_hash = coalesce(?4, script_hash), "
                      "args_json = coalesce(?5, args_json), sandbox = coalesce(?6, sandbox), "
                      "mem_limit = coalesce(?7, mem_limit), "
                      "instr_limit = coalesce(?8, instr_limit), "
                      "time_limit = coalesce(?9, time_limit), "
                      "model_hash = coalesce(?10, model_hash), "
                      "model_path = coalesce(?11, model_path) WHERE id = ?1",
    [ST_CALL_ADD] = "INSERT INTO calls(run_id, key, fn, summary, status, added_at) "
                    "VALUES(?1, ?2, ?3, ?4, 'pending', ?5) "
                    "ON CONFLICT(run_id, key) DO NOTHING",
    [ST_CALL_STATUS] = "INSERT INTO calls(run_id, key, status, error, added_at) "
                       "VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(run_id, key) DO UPDATE "
                       "SET status = excluded.status, error = excluded.error "
                       "WHERE calls.status <> 'done'",
    [ST_CALL_COMPLETE] =
        "INSERT INTO calls(run_id, key, status, output, n_prompt, n_cached, n_generated, "
        "seconds, added_at, completed_at) VALUES(?1, ?2, 'done', ?3, ?4, ?5, ?6, ?7, ?8, ?8) "
        "ON CONFLICT(run_id, key) DO UPDATE SET status = 'done', output = excluded.output, "
        "n_prompt = excluded.n_prompt, n_cached = excluded.n_cached, "
        "n_generated = excluded.n_generated, seconds = excluded.seconds, "
        "completed_at = excluded.completed_at, error = NULL",
    [ST_CALL_LOOKUP] = "SELECT output, n_prompt, n_cached, n_generated, seconds FROM calls "
                       "WHERE run_id = ?1 AND key = ?2 AND status = 'done'",
    [ST_EDGE_ADD] = "INSERT OR IGNORE INTO edges(run_id, src, dst) VALUES(?1, ?2, ?3)",
};

/* ST_RUN_GET and ST_RUNS_LIST for a database of runs schema `version` into
 * buf (RC_* columns; ?1 is the run id, or the limit). */
static void run_select_sql(int64_t version, bool get, char *buf, size_t n)
{
    snprintf(buf, n,
             "SELECT r.id, r.status, r.script_path, r.script_hash, r.args_json, r.error, "
             "r.started_at, r.finished_at, r.pid, r.resumes, count(c.key), "
             "coalesce(sum(c.status = 'done'), 0), coalesce(sum(c.status = 'failed'), 0), "
             "coalesce(sum(CASE WHEN c.status = 'done' THEN c.n_generated END), 0), %s, %s, %s, %s "
             "FROM %s r LEFT JOIN calls c ON c.run_id = r.id %s GROUP BY r.id ORDER BY r.id DESC",
             version >= 2 ? "r.sandbox, r.mem_limit, r.instr_limit, r.time_limit" : "0, 0, 0, 0.0",
             version >= 3 ? "r.model_hash, r.model_path" : "NULL, NULL",
             /* before version 4 a run's span is all that is known */
             version >= 4 ? "r.active_s, r.attempt_at"
                          : "coalesce(r.finished_at - r.started_at, 0), r.started_at",
             get ? "r.output" : "NULL",
             get ? "runs" : "(SELECT * FROM runs ORDER BY id DESC LIMIT ?1)",
             get ? "WHERE r.id = ?1" : "");
}

/* Version 1 of the runs schema; a new database is created at version 1 and
 * then upgraded like an old one, so each column is defined once. */
static const char schema_v1_sql[] =
    "CREATE TABLE IF NOT EXISTS weft_schema("
    "  component TEXT PRIMARY KEY, version INTEGER NOT NULL);"
    "CREATE TABLE runs("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  script_path TEXT NOT NULL,"
    "  script_hash TEXT NOT NULL DEFAULT '',"
    "  args_json TEXT NOT NULL DEFAULT '{}',"
    "  status TEXT NOT NULL CHECK(status IN ('running', 'finished', 'failed')),"
    "  started_at REAL NOT NULL,"
    "  finished_at REAL,"
    "  pid INTEGER,"
    "  resumes INTEGER NOT NULL DEFAULT 0,"
    "  output TEXT,"
    "  error TEXT);"
    "CREATE TABLE calls("
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL,"
    "  fn TEXT,"
    "  summary TEXT,"
    "  status TEXT NOT NULL CHECK(status IN ('pending', 'running', 'done', 'failed')),"
    "  output BLOB,"
    "  n_prompt INTEGER, n_cached INTEGER, n_generated INTEGER,"
    "  seconds REAL,"
    "  added_at REAL,"
    "  completed_at REAL,"
    "  error TEXT,"
    "  UNIQUE(run_id, key));"
    "CREATE TABLE edges("
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  src TEXT NOT NULL, dst TEXT NOT NULL,"
    "  PRIMARY KEY(run_id, src, dst)) WITHOUT ROWID;"
    "INSERT INTO weft_schema(component, version) VALUES('runs', 1);";

/* Version 1 -> 2: the limits a run's script runs under, so that a resume of
 * a sandboxed run is sandboxed too. Runs recorded by version 1 get none:
 * their limits were never recorded. */
static const char migrate_v2_sql[] =
    "ALTER TABLE runs ADD COLUMN sandbox INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE runs ADD COLUMN mem_limit INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE runs ADD COLUMN instr_limit INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE runs ADD COLUMN time_limit REAL NOT NULL DEFAULT 0;"
    "UPDATE weft_schema SET version = 2 WHERE component = 'runs';";

/* Version 2 -> 3: the model a run's values were computed by, so that a
 * resume with another model is refused instead of mixing the two models'
 * values. Runs recorded by version 2 have none (NULL): not checked. */
static const char migrate_v3_sql[] =
    "ALTER TABLE runs ADD COLUMN model_hash TEXT;"
    "ALTER TABLE runs ADD COLUMN model_path TEXT;"
    "UPDATE weft_schema SET version = 3 WHERE component = 'runs';";

/* Version 3 -> 4: the seconds a run was active — the sum over its attempts
 * (the first and each resume) — and when the current attempt began, so that
 * a run's duration leaves out the time between a crash and its resume. For
 * runs recorded before, their span is all that is known. */
static const char migrate_v4_sql[] =
    "ALTER TABLE runs ADD COLUMN active_s REAL NOT NULL DEFAULT 0;"
    "ALTER TABLE runs ADD COLUMN attempt_at REAL;"
    "UPDATE runs SET attempt_at = started_at, "
    "  active_s = coalesce(finished_at - started_at, 0);"
    "UPDATE weft_schema SET version = 4 WHERE component = 'runs';";

/* migrations[v] upgrades version v - 1 to v. */
static const char *const migrations[RUNS_SCHEMA_VERSION + 1] = {
    [2] = migrate_v2_sql,
    [3] = migrate_v3_sql,
    [4] = migrate_v4_sql,
};

struct weft_store {
    sqlite3 *db;
    char *path;
    bool readonly;
    int64_t version; /* of the runs schema: RUNS_SCHEMA_VERSION, or older read-only */
    sqlite3_stmt *st[ST_COUNT];
    int lock_fd;     /* "<path>-runlock"; -1: not open (read-only: see lock_errno) */
    int lock_errno;  /* why a read-only store has no lock_fd */
    bool immutable;  /* read-only, opened with ?immutable=1: the WAL was unusable */
    int64_t *held;   /* the runs whose lock this store holds */
    size_t n_held, cap_held;
};

/* ---- errors -------------------------------------------------------------- */

/* Maps a SQLite result to a WEFT_E* code and records "path: what: sqlite's
 * message". */
static int db_error(weft_store *s, int rc, const char *what)
{
    const char *msg = s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
    int code;
    switch (rc & 0xff) {
    case SQLITE_NOTADB:
        return weft_error(WEFT_EFORMAT, "%s: not a SQLite database (%s)", s->path, msg);
    case SQLITE_CORRUPT:
        return weft_error(WEFT_EFORMAT, "%s: database is corrupt (%s)", s->path, msg);
    case SQLITE_BUSY:
    case SQLITE_LOCKED: code = WEFT_EBUSY; break;
    case SQLITE_NOMEM: code = WEFT_ENOMEM; break;
    case SQLITE_CONSTRAINT: code = WEFT_EINVAL; break;
    case SQLITE_TOOBIG: code = WEFT_ERANGE; break;
    default: code = WEFT_EIO; break;
    }
    return weft_error(code, "%s: %s: %s", s->path, what, msg);
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- paths --------------------------------------------------------------- */

int weft_store_default_path(char *buf, size_t n)
{
    const char *env = getenv("WEFT_DB");
    int len;
    if (env && *env) {
        len = snprintf(buf, n, "%s", env);
    } else if ((env = getenv("XDG_DATA_HOME")) && *env == '/') {
        len = snprintf(buf, n, "%s/weft/weft.db", env);
    } else {
        const char *home = getenv("HOME");
        if (!home || !*home) {
            struct passwd *pw = getpwuid(getuid());
            home = pw ? pw->pw_dir : NULL;
        }
        if (!home || !*home)
            return weft_error(WEFT_ENOTFOUND, "no home directory for the database; set WEFT_DB");
        len = snprintf(buf, n, "%s/.local/share/weft/weft.db", home);
    }
    if (len < 0 || (size_t)len >= n)
        return weft_error(WEFT_ERANGE, "database path is too long");
    return 0;
}

/* mkdir -p of the directory part of `path`. */
static int make_parent_dirs(const char *path)
{
    char *dir = weft_strdup(path);
    if (!dir) return weft_error(WEFT_ENOMEM, "out of memory");
    char *slash = strrchr(dir, '/');
    int rc = 0;
    if (slash && slash != dir) {
        *slash = 0;
        for (char *p = dir + 1;; p++) {
            if (*p != '/' && *p != 0) continue;
            char c = *p;
            *p = 0;
            if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
                rc = weft_error(WEFT_EIO, "cannot create directory %s: %s", dir,
                                strerror(errno));
                break;
            }
            *p = c;
            if (!c) break;
        }
    }
    weft_free(dir);
    return rc;
}

void weft_store_hash_hex(const void *data, size_t len, char out[WEFT_STORE_HASH_HEX])
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(data, len));
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[c.digest[i] >> 4];
        out[2 * i + 1] = hex[c.digest[i] & 15];
    }
    out[32] = 0;
}

/* ---- run locks (see the top of the file) --------------------------------- */

/* Opens "<path>-runlock": created by a writer (WEFT_EIO if it cannot be: a
 * run it began could not be told from an interrupted one), opened read-only
 * by a reader, which without it records why in lock_errno and returns 0. */
static int lock_open(weft_store *s)
{
    if (s->lock_fd >= 0) return 0;
    char path[4200];
    if (snprintf(path, sizeof path, "%s-runlock", s->path) >= (int)sizeof path)
        return weft_error(WEFT_ERANGE, "%s: database path is too long", s->path);
    s->lock_fd = s->readonly ? open(path, O_RDONLY | O_CLOEXEC)
                             : open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lock_fd >= 0) return 0;
    s->lock_errno = errno;
    if (s->readonly) return 0;
    return weft_error(WEFT_EIO, "%s: cannot open the run lock file: %s", path, strerror(errno));
}

static bool run_held(const weft_store *s, int64_t run_id)
{
    for (size_t i = 0; i < s->n_held; i++)
        if (s->held[i] == run_id) return true;
    return false;
}

/* fcntl `cmd` with a lock of `type` on run_id's byte; fcntl's result. */
static int lock_byte(const weft_store *s, int cmd, short type, struct flock *fl, int64_t run_id)
{
    memset(fl, 0, sizeof *fl); /* l_pid must be 0 for OFD locks */
    fl->l_type = type;
    fl->l_whence = SEEK_SET;
    fl->l_start = (off_t)run_id;
    fl->l_len = 1;
    return fcntl(s->lock_fd, cmd, fl);
}

/* Takes run_id's lock for this store (held until run_unlock or close).
 * WEFT_EBUSY when another process holds it, WEFT_EIO or WEFT_ENOMEM. */
static int run_lock(weft_store *s, int64_t run_id)
{
    struct flock fl;
    if (run_held(s, run_id)) return 0;
    if (s->lock_fd < 0) return weft_error(WEFT_EIO, "%s: no run lock file", s->path);
    if (s->n_held == s->cap_held) {
        size_t cap = s->cap_held ? 2 * s->cap_held : 4;
        int64_t *h = weft_realloc(s->held, cap * sizeof *h);
        if (!h) return weft_error(WEFT_ENOMEM, "out of memory");
        s->held = h;
        s->cap_held = cap;
    }
    if (lock_byte(s, F_OFD_SETLK, F_WRLCK, &fl, run_id) != 0) {
        if (errno == EAGAIN || errno == EACCES)
            return weft_error(WEFT_EBUSY, "run %lld is still running (another process holds "
                              "its lock)", (long long)run_id);
        return weft_error(WEFT_EIO, "%s-runlock: cannot lock run %lld: %s", s->path,
                          (long long)run_id, strerror(errno));
    }
    s->held[s->n_held++] = run_id;
    return 0;
}

static void run_unlock(weft_store *s, int64_t run_id)
{
    struct flock fl;
    for (size_t i = 0; i < s->n_held; i++)
        if (s->held[i] == run_id) {
            lock_byte(s, F_OFD_SETLK, F_UNLCK, &fl, run_id);
            s->held[i] = s->held[--s->n_held];
            return;
        }
}

static bool pid_gone(int64_t pid)
{
    if (pid <= 0 || pid == (int64_t)getpid()) return false;
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* Whether a process executes run `id`, marked running (recorded `pid`): it
 * holds the run's lock. Without a lock file there is none to hold, unless
 * it could not be opened (permissions): then the pid is all there is. */
static bool run_alive(weft_store *s, int64_t id, int64_t pid)
{
    if (run_held(s, id)) return true;
    if (s->lock_fd < 0 && s->lock_errno == ENOENT) lock_open(s); /* a run began since */
    if (s->lock_fd < 0) return s->lock_errno == ENOENT ? false : !pid_gone(pid);
    struct flock fl;
    if (lock_byte(s, F_OFD_GETLK, F_RDLCK, &fl, id) != 0) return !pid_gone(pid);
    return fl.l_type != F_UNLCK;
}

/* ---- open / close -------------------------------------------------------- */

static int exec(weft_store *s, const char *sql, const char *what)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : db_error(s, rc, what);
}

/* Runs a query returning one integer (or `dflt` when it returns no row). */
static int query_int(weft_store *s, const char *sql, int64_t dflt, int64_t *out)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) return db_error(s, rc, "reading the schema");
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
        rc = SQLITE_DONE;
    } else {
        *out = dflt;
    }
    int err = rc == SQLITE_DONE ? 0 : db_error(s, rc, "reading the schema");
    sqlite3_finalize(st);
    return err;
}

/* Checks that the file is weft's (or empty), creates the runs tables when
 * they are missing and upgrades an older runs schema (read-only, it is read
 * as it is). Sets s->version. Inside BEGIN IMMEDIATE unless read-only. */
static int check_schema(weft_store *s)
{
    int64_t app_id, n_objects, has_schema, version;
    int rc;
    if ((rc = query_int(s, "PRAGMA application_id", 0, &app_id)) ||
        (rc = query_int(s, "SELECT count(*) FROM sqlite_master", 0, &n_objects)) ||
        (rc = query_int(s, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                           "name = 'weft_schema'", 0, &has_schema)))
        return rc;
    if (app_id != 0 && app_id != STORE_APP_ID)
        return weft_error(WEFT_EFORMAT,
                          "%s: not a weft database (application_id 0x%08llx); use "
                          "another path (--db or WEFT_DB)",
                          s->path, (unsigned long long)app_id);
    if (n_objects > 0 && !has_schema)
        return weft_error(WEFT_EFORMAT,
                          "%s: not a weft database (it holds other tables and no "
                          "weft_schema); use another path (--db or WEFT_DB)",
                          s->path);
    version = 0;
    if (has_schema &&
        (rc = query_int(s, "SELECT version FROM weft_schema WHERE component = 'runs'", 0,
                        &version)))
        return rc;
    if (version > RUNS_SCHEMA_VERSION)
        return weft_error(WEFT_EUNSUPPORTED,
                          "%s: runs schema version %lld is newer than this weft "
                          "knows (%d); upgrade weft",
                          s->path, (long long)version, RUNS_SCHEMA_VERSION);
    s->version = version;
    if (version == RUNS_SCHEMA_VERSION || (s->readonly && version > 0)) return 0;
    if (s->readonly)
        return weft_error(WEFT_ENOTFOUND, "%s: no runs recorded", s->path);
    if (version == 0) {
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA application_id = %d", STORE_APP_ID);
        if ((rc = exec(s, pragma, "marking the file")) ||
            (rc = exec(s, schema_v1_sql, "creating the schema")))
            return rc;
        version = 1;
    }
    for (int64_t v = version + 1; v <= RUNS_SCHEMA_VERSION; v++)
        if ((rc = exec(s, migrations[v], "upgrading the schema"))) return rc;
    s->version = RUNS_SCHEMA_VERSION;
    return 0;
}

/* sqlite3_open_v2 of `name` (a path, or a URI with SQLITE_OPEN_URI) into
 * s->db, with extended result codes and the busy timeout. WEFT_EIO or
 * WEFT_ENOMEM. */
static int db_connect(weft_store *s, const char *name, int oflags)
{
    int src = sqlite3_open_v2(name, &s->db, oflags, NULL);
    if (src != SQLITE_OK)
        return weft_error(src == SQLITE_NOMEM ? WEFT_ENOMEM : WEFT_EIO, "%s: cannot open: %s",
                          s->path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(src));
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    return 0;
}

/* False when a read-only connection cannot read the file because a WAL
 * database needs its -shm file and that cannot be created or written (a
 * read-only directory or -shm): SQLite then says the database is read-only
 * or cannot be opened. Any other outcome is left to check_schema. */
static bool wal_readable(weft_store *s)
{
    int rc = sqlite3_exec(s->db, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
    return (rc & 0xff) != SQLITE_READONLY && (rc & 0xff) != SQLITE_CANTOPEN;
}

/* "file:PATH?immutable=1", PATH %-escaped; weft_malloc'd, NULL when out of
 * memory. Immutable: SQLite reads the file as it is, takes no locks and
 * needs no -shm — so it ignores a -wal file, whose commits it does not
 * see (weft_store_immutable() tells the caller). */
static char *immutable_uri(const char *path)
{
    static const char hex[] = "0123456789ABCDEF";
    char *uri = weft_malloc(strlen(path) * 3 + sizeof "file:?immutable=1");
    if (!uri) return NULL;
    char *o = uri + sprintf(uri, "file:");
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        if (*p == '/' || *p == '.' || *p == '-' || *p == '_' || (*p >= '0' && *p <= '9') ||
            ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z')) {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    strcpy(o, "?immutable=1");
    return uri;
}

int weft_store_open(const char *path, int flags, weft_store **out)
{
    *out = NULL;
    char def[4096];
    int rc;
    if (!path) {
        if ((rc = weft_store_default_path(def, sizeof def))) return rc;
        path = def;
    }
    if (!*path) return weft_error(WEFT_EINVAL, "empty database path");
    weft_store *s = weft_calloc(1, sizeof *s);
    if (!s || !(s->path = weft_strdup(path))) {
        weft_free(s);
        return weft_error(WEFT_ENOMEM, "out of memory");
    }
    s->readonly = (flags & WEFT_STORE_READONLY) != 0;
    s->lock_fd = -1;
    struct stat sb;
    if (s->readonly && stat(path, &sb) != 0) {
        rc = weft_error(WEFT_ENOTFOUND, "%s: no such database", path);
        goto fail;
    }
    if (!s->readonly && (rc = make_parent_dirs(path))) goto fail;
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        rc = weft_error(WEFT_EIO, "%s: not a regular file", path);
        goto fail;
    }

    int oflags = (s->readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                 SQLITE_OPEN_NOMUTEX;
    if ((rc = db_connect(s, path, oflags))) goto fail;
    if (s->readonly && !wal_readable(s)) {
        char *uri = immutable_uri(path);
        sqlite3_close_v2(s->db);
        s->db = NULL;
        s->immutable = true;
        rc = uri ? db_connect(s, uri, oflags | SQLITE_OPEN_URI) : weft_error(WEFT_ENOMEM, "out of memory");
        weft_free(uri);
        if (rc) goto fail;
    }

    /* The first statements read the header: a foreign or corrupt file fails
     * here, as SQLITE_NOTADB / SQLITE_CORRUPT -> WEFT_EFORMAT. */
    const char *sync = getenv("WEFT_DB_SYNC");
    bool full = sync && strcmp(sync, "full") == 0;
    if ((rc = exec(s, "PRAGMA foreign_keys = ON", "configuring"))) goto fail;
    if (!s->readonly) {
        if ((rc = exec(s, "PRAGMA journal_mode = WAL", "switching to WAL")) ||
            (rc = exec(s, full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
                       "configuring")))
            goto fail;
        if ((rc = exec(s, "BEGIN IMMEDIATE", "locking the schema"))) goto fail;
        rc = check_schema(s);
        if (rc) {
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            goto fail;
        }
        if ((rc = exec(s, "COMMIT", "creating the schema"))) goto fail;
    } else if ((rc = check_schema(s))) {
        goto fail;
    }
    if ((rc = lock_open(s))) goto fail;
    *out = s;
    return 0;
fail:
    weft_store_close(s);
    return rc;
}

void weft_store_close(weft_store *s)
{
    if (!s) return;
    for (int i = 0; i < ST_COUNT; i++) sqlite3_finalize(s->st[i]);
    /* sqlite3_close_v2 runs the WAL checkpoint when this is the last
     * connection; a failure there leaves the WAL in place, which is fine. */
    if (s->db) sqlite3_close_v2(s->db);
    if (s->lock_fd >= 0) close(s->lock_fd); /* drops the runs' locks */
    weft_free(s->held);
    weft_free(s->path);
    weft_free(s);
}

const char *weft_store_path(const weft_store *s) { return s->path; }

bool weft_store_immutable(const weft_store *s) { return s->immutable; }

/* The cached statement `id` (prepared on first use; statements are left reset
 * with their bindings cleared). */
static int stmt(weft_store *s, int id, sqlite3_stmt **out)
{
    if (!s->st[id]) {
        char select[2048];
        const char *sql = stmt_sql[id];
        if (id == ST_RUN_GET || id == ST_RUNS_LIST) {
            run_select_sql(s->version, id == ST_RUN_GET, select, sizeof select);
            sql = select;
        }
        int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->st[id], NULL);
        if (rc != SQLITE_OK) return db_error(s, rc, "preparing a statement");
    }
    *out = s->st[id];
    return 0;
}

static void stmt_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Checks `b`, the first failed result of a statement's sqlite3_bind_* calls
 * (SQLITE_OK if none failed). An unchecked failure would run the statement
 * with that parameter NULL: a value over SQLite's length limit would be
 * stored as NULL and reported as a success. Returns 0, or — after resetting
 * `st` — WEFT_ERANGE for a value over the limit, else what db_error maps. */
static int bound(weft_store *s, sqlite3_stmt *st, int b, const char *what)
{
    if (b == SQLITE_OK) return 0;
    stmt_done(st);
    if (b == SQLITE_TOOBIG)
        return weft_error(WEFT_ERANGE, "%s: %s: a value is larger than SQLite's limit of %d bytes",
                          s->path, what, sqlite3_limit(s->db, SQLITE_LIMIT_LENGTH, -1));
    return db_error(s, b, what);
}

/* Steps a write statement to completion. */
static int step_write(weft_store *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    int err = 0;
    if (rc != SQLITE_DONE) {
        if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
            err = weft_error(WEFT_ENOTFOUND, "%s: %s: no such run", s->path, what);
        else
            err = db_error(s, rc, what);
    }
    stmt_done(st);
    return err;
}

static int check_key(const char *key)
{
    if (!key || !*key) return weft_error(WEFT_EINVAL, "call key is empty");
    if (strlen(key) > MAX_KEY)
        return weft_error(WEFT_EINVAL, "call key is longer than %d bytes", MAX_KEY);
    return 0;
}

static int check_writable(weft_store *s)
{
    if (s->readonly) return weft_error(WEFT_EINVAL, "%s: opened read-only", s->path);
    return 0;
}

/* ---- runs ---------------------------------------------------------------- */

const char *weft_run_status_name(weft_run_status st)
{
    switch (st) {
    case WEFT_RUN_RUNNING: return "running";
    case WEFT_RUN_FINISHED: return "finished";
    case WEFT_RUN_FAILED: return "failed";
    case WEFT_RUN_INTERRUPTED: return "interrupted";
    }
    return "unknown";
}

const char *weft_call_status_name(weft_call_status st)
{
    switch (st) {
    case WEFT_CALL_PENDING: return "pending";
    case WEFT_CALL_RUNNING: return "running";
    case WEFT_CALL_DONE: return "done";
    case WEFT_CALL_FAILED: return "failed";
    }
    return "unknown";
}

/* WEFT_EINVAL unless `spec` names a script, has arguments that are a JSON
 * object or array (or none) and no negative limit. */
static int check_spec(const weft_store_run_spec *spec)
{
    if (!spec->script_path || !*spec->script_path)
        return weft_error(WEFT_EINVAL, "run: no script path");
    if (spec->args_json) {
        json_error_t jerr;
        json_t *j = json_loads(spec->args_json, 0, &jerr);
        if (!j)
            return weft_error(WEFT_EINVAL, "run arguments are not a JSON object or array: %s",
                              jerr.text);
        json_decref(j);
    }
    const weft_store_run_limits *l = &spec->limits;
    if (l->mem_limit < 0 || l->instr_limit < 0 || !(l->time_limit >= 0))
        return weft_error(WEFT_EINVAL, "run limits must be 0 (none) or positive");
    return 0;
}

/* Binds `spec` to ?3..?11 of ST_RUN_BEGIN or ST_RUN_RESUME (a model left
 * NULL). Returns the first failed bind's result, or SQLITE_OK. */
static int bind_spec(sqlite3_stmt *st, const weft_store_run_spec *spec)
{
    const weft_store_run_limits *l = &spec->limits;
    int b = sqlite3_bind_text(st, 3, spec->script_path, -1, SQLITE_STATIC);
    if (!b) b = sqlite3_bind_text(st, 4, spec->script_hash ? spec->script_hash : "", -1, SQLITE_STATIC);
    if (!b) b = sqlite3_bind_text(st, 5, spec->args_json ? spec->args_json : "{}", -1, SQLITE_STATIC);
    if (!b) b = sqlite3_bind_int(st, 6, l->sandboxed);
    if (!b) b = sqlite3_bind_int64(st, 7, l->mem_limit);
    if (!b) b = sqlite3_bind_int64(st, 8, l->instr_limit);
    if (!b) b = sqlite3_bind_double(st, 9, l->time_limit);
    if (!b && spec->model_hash) b = sqlite3_bind_text(st, 10, spec->model_hash, -1, SQLITE_STATIC);
    if (!b && spec->model_hash && spec->model_path)
        b = sqlite3_bind_text(st, 11, spec->model_path, -1, SQLITE_STATIC);
    return b;
}

int weft_store_run_begin_with(weft_store *s, const weft_store_run_spec *spec, int64_t *run_id)
{
    int rc;
    if ((rc = check_writable(s)) || (rc = check_spec(spec))) return rc;
    /* the row and its lock appear together: no other process sees the run
     * running without its lock (which would read as interrupted) */
    if ((rc = exec(s, "BEGIN IMMEDIATE", "starting a run"))) return rc;
    sqlite3_stmt *st;
    int64_t id = 0;
    if ((rc = stmt(s, ST_RUN_BEGIN, &st))) goto fail;
    int b = sqlite3_bind_double(st, 1, wall_now());
    if (!b) b = sqlite3_bind_int64(st, 2, (int64_t)getpid());
    if (!b) b = bind_spec(st, spec);
    if ((rc = bound(s, st, b, "starting a run")) || (rc = step_write(s, st, "starting a run")))
        goto fail;
    id = sqlite3_last_insert_rowid(s->db);
    if ((rc = run_lock(s, id)) || (rc = exec(s, "COMMIT", "starting a run"))) goto fail;
    *run_id = id;
    return 0;
fail:
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    if (id) run_unlock(s, id);
    return rc;
}

int weft_store_run_begin(weft_store *s, const char *script_path, const char *script_hash,
                         const char *args_json, int64_t *run_id)
{
    const weft_store_run_spec spec = {script_path, script_hash, args_json, {0}, NULL, NULL};
    return weft_store_run_begin_with(s, &spec, run_id);
}

static char *col_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? weft_strdup((const char *)t) : NULL;
}

/* Reads the RC_* columns of the current row (output too if `with_output`)
 * into *r. */
static int read_run(weft_store *s, sqlite3_stmt *st, weft_store_run *r, bool with_output)
{
    memset(r, 0, sizeof *r);
    r->id = sqlite3_column_int64(st, RC_ID);
    const char *status = (const char *)sqlite3_column_text(st, RC_STATUS);
    r->status = !status                         ? WEFT_RUN_FAILED
                : strcmp(status, "running") == 0  ? WEFT_RUN_RUNNING
                : strcmp(status, "finished") == 0 ? WEFT_RUN_FINISHED
                                                  : WEFT_RUN_FAILED;
    r->script_path = col_dup(st, RC_SCRIPT_PATH);
    r->script_hash = col_dup(st, RC_SCRIPT_HASH);
    r->args_json = col_dup(st, RC_ARGS);
    r->error = col_dup(st, RC_ERROR);
    r->started_at = sqlite3_column_double(st, RC_STARTED);
    r->finished_at = sqlite3_column_double(st, RC_FINISHED);
    r->pid = sqlite3_column_int64(st, RC_PID);
    r->resumes = sqlite3_column_int(st, RC_RESUMES);
    r->calls_total = sqlite3_column_int64(st, RC_CALLS);
    r->calls_done = sqlite3_column_int64(st, RC_DONE);
    r->calls_failed = sqlite3_column_int64(st, RC_FAILED);
    r->tokens_generated = sqlite3_column_int64(st, RC_TOKENS);
    r->limits.sandboxed = sqlite3_column_int(st, RC_SANDBOX) != 0;
    r->limits.mem_limit = sqlite3_column_int64(st, RC_MEM);
    r->limits.instr_limit = sqlite3_column_int64(st, RC_INSTR);
    r->limits.time_limit = sqlite3_column_double(st, RC_TIME);
    r->model_hash = col_dup(st, RC_MODEL_HASH);
    r->model_path = col_dup(st, RC_MODEL_PATH);
    r->active_seconds = sqlite3_column_double(st, RC_ACTIVE);
    r->attempt_started_at = sqlite3_column_double(st, RC_ATTEMPT);
    if (with_output) r->output = col_dup(st, RC_OUTPUT);
    if (r->status == WEFT_RUN_RUNNING && !run_alive(s, r->id, r->pid))
        r->status = WEFT_RUN_INTERRUPTED;
    const int nullable[] = {RC_ERROR, RC_MODEL_HASH, RC_MODEL_PATH, RC_OUTPUT};
    char *const copies[] = {r->error, r->model_hash, r->model_path, r->output};
    bool lost = !r->script_path || !r->script_hash || !r->args_json;
    for (size_t i = 0; i < sizeof copies / sizeof *copies; i++)
        lost |= !copies[i] && sqlite3_column_type(st, nullable[i]) != SQLITE_NULL &&
                (nullable[i] != RC_OUTPUT || with_output);
    if (lost) {
        weft_store_run_clear(r);
        return weft_error(WEFT_ENOMEM, "out of memory");
    }
    return 0;
}

void weft_store_run_clear(weft_store_run *r)
{
    if (!r) return;
    weft_free(r->script_path);
    weft_free(r->script_hash);
    weft_free(r->args_json);
    weft_free(r->output);
    weft_free(r->error);
    weft_free(r->model_hash);
    weft_free(r->model_path);
    memset(r, 0, sizeof *r);
}

int weft_store_run_get(weft_store *s, int64_t run_id, weft_store_run *out)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st;
    int rc, err;
    if ((rc = stmt(s, ST_RUN_GET, &st)) ||
        (rc = bound(s, st, sqlite3_bind_int64(st, 1, run_id), "reading a run")))
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        err = read_run(s, st, out, true);
    else if (rc == SQLITE_DONE)
        err = weft_error(WEFT_ENOTFOUND, "no run %lld in %s", (long long)run_id, s->path);
    else
        err = db_error(s, rc, "reading a run");
    stmt_done(st);
    return err;
}

/* True when a limit `next` is looser than `was` (0: none). */
static bool looser(double was, double next) { return was > 0 && (next <= 0 || next > was); }

/* WEFT_EINVAL when `next` would run the script of run `r`, recorded as
 * sandboxed, with less of its sandbox: a resume may tighten, never drop. */
static int check_sandbox_kept(const weft_store_run *r, const weft_store_run_limits *next)
{
    const weft_store_run_limits *was = &r->limits;
    if (!was->sandboxed) return 0;
    const char *how = !next->sandboxed ? "without its sandbox"
                      : looser((double)was->mem_limit, (double)next->mem_limit)
                          ? "with a larger memory cap"
                      : looser((double)was->instr_limit, (double)next->instr_limit)
                          ? "with a larger instruction budget"
                      : looser(was->time_limit, next->time_limit) ? "with a longer time limit"
                                                                  : NULL;
    if (!how) return 0;
    return weft_error(WEFT_EINVAL, "run %lld is sandboxed: it cannot be resumed %s",
                      (long long)r->id, how);
}

/* WEFT_EINVAL when `spec` names another model than the one run `r` was
 * recorded with: the stored values are that model's, and serving them to a
 * run of this one would mix two models' outputs in one result. A run
 * recorded without a model (before models were recorded) is not checked. */
static int check_model_kept(const weft_store_run *r, const weft_store_run_spec *spec)
{
    if (!r->model_hash || !spec->model_hash || strcmp(r->model_hash, spec->model_hash) == 0)
        return 0;
    return weft_error(WEFT_EINVAL,
                      "run %lld was computed by the model %s (%s), not by %s (%s): its stored "
                      "values are that model's; resume it with that model, or start a new run",
                      (long long)r->id, r->model_path ? r->model_path : "?", r->model_hash,
                      spec->model_path ? spec->model_path : "?", spec->model_hash);
}

int weft_store_run_resume_with(weft_store *s, int64_t run_id, const weft_store_run_spec *spec,
                               weft_store_run *info)
{
    int rc;
    if (info) memset(info, 0, sizeof *info);
    if ((rc = check_writable(s)) || (spec && (rc = check_spec(spec)))) return rc;
    if ((rc = exec(s, "BEGIN IMMEDIATE", "resuming a run"))) return rc;
    weft_store_run tmp = {0}, *r = info ? info : &tmp;
    const bool held = run_held(s, run_id);
    if ((rc = weft_store_run_get(s, run_id, r))) goto fail;
    /* read_run turned a run whose lock nobody holds into INTERRUPTED:
     * RUNNING here means a process holds it — this store, or another one */
    if (r->status == WEFT_RUN_RUNNING && !held) {
        rc = weft_error(WEFT_EBUSY, "run %lld is still running (pid %lld)",
                        (long long)run_id, (long long)r->pid);
        goto fail;
    }
    if ((rc = run_lock(s, run_id))) goto fail; /* EBUSY if another took it since */
    if (spec && ((rc = check_sandbox_kept(r, &spec->limits)) || (rc = check_model_kept(r, spec))))
        goto fail;
    weft_store_run_clear(&tmp);
    sqlite3_stmt *st;
    if ((rc = stmt(s, ST_RUN_RESUME, &st))) goto fail;
    int b = sqlite3_bind_int64(st, 1, run_id);
    if (!b) b = sqlite3_bind_int64(st, 2, (int64_t)getpid());
    if (!b && spec) b = bind_spec(st, spec);
    if (!b) b = sqlite3_bind_double(st, 12, wall_now());
    if ((rc = bound(s, st, b, "resuming a run")) || (rc = step_write(s, st, "resuming a run")))
        goto fail;
    if ((rc = exec(s, "COMMIT", "resuming a run"))) goto fail;
    return 0;
fail:
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    if (!held) run_unlock(s, run_id);
    weft_store_run_clear(r);
    return rc;
}

int weft_store_run_resume(weft_store *s, int64_t run_id, weft_store_run *info)
{
    return weft_store_run_resume_with(s, run_id, NULL, info);
}

int weft_store_run_finish(weft_store *s, int64_t run_id, const char *output,
                          const char *error)
{
    int rc;
    if ((rc = check_writable(s))) return rc;
    sqlite3_stmt *st;
    if ((rc = stmt(s, ST_RUN_FINISH, &st))) return rc;
    int b = sqlite3_bind_int64(st, 1, run_id);
    if (!b) b = sqlite3_bind_text(st, 2, error ? "failed" : "finished", -1, SQLITE_STATIC);
    if (!b) b = sqlite3_bind_double(st, 3, wall_now());
    if (!b && output) b = sqlite3_bind_text(st, 4, output, -1, SQLITE_STATIC);
    if (!b && error) b = sqlite3_bind_text(st, 5, error, -1, SQLITE_STATIC);
    if ((rc = bound(s, st, b, "finishing a run")) || (rc = step_write(s, st, "finishing a run")))
        return rc;
    if (sqlite3_changes(s->db) == 0)
        return weft_error(WEFT_ENOTFOUND, "no run %lld in %s", (long long)run_id, s->path);
    run_unlock(s, run_id); /* no longer running */
    return 0;
}

void weft_store_runs_free(weft_store_run *runs, size_t n)
{
    if (!runs) return;
    for (size_t i = 0; i < n; i++) weft_store_run_clear(&runs[i]);
    weft_free(runs);
}

int weft_store_runs_list(weft_store *s, int limit, weft_store_run **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st;
    int rc, err = 0;
    if ((rc = stmt(s, ST_RUNS_LIST, &st)) ||
        (rc = bound(s, st, sqlite3_bind_int64(st, 1, limit > 0 ? limit : -1), "listing runs")))
        return rc;
    weft_store_run *v = NULL;
    size_t len = 0, cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (len == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            weft_store_run *nv = weft_realloc(v, ncap * sizeof *v);
            if (!nv) {
                err = weft_error(WEFT_ENOMEM, "out of memory");
                break;
            }
            v = nv;
            cap = ncap;
        }
        if ((err = read_run(s, st, &v[len], false))) break;
        len++;
    }
    if (!err && rc != SQLITE_DONE) err = db_error(s, rc, "listing runs");
    stmt_done(st);
    if (err) {
        weft_store_runs_free(v, len);
        return err;
    }
    *out = v;
    *n = len;
    return 0;
}

/* ---- calls --------------------------------------------------------------- */

int weft_store_call_add(weft_store *s, int64_t run_id, const char *key, const char *fn,
                        const char *summary)
{
    int rc;
    if ((rc = check_writable(s)) || (rc = check_key(key))) return rc;
    sqlite3_stmt *st;
    if ((rc = stmt(s, ST_CALL_ADD, &st))) return rc;
    int b = sqlite3_bind_int64(st, 1, run_id);
    if (!b) b = sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    if (!b && fn) b = sqlite3_bind_text(st, 3, fn, -1, SQLITE_STATIC);
    if (!b && summary) b = sqlite3_bind_text(st, 4, summary, -1, SQLITE_STATIC);
    if (!b) b = sqlite3_bind_double(st, 5, wall_now());
    if ((rc = bound(s, st, b, "adding a call"))) return rc;
    return step_write(s, st, "adding a call");
}

int weft_store_edge_add(weft_store *s, int64_t run_id, const char *src, const char *dst)
{
    int rc;
    if ((rc = check_writable(s)) || (rc = check_key(src)) || (rc = check_key(dst))) return rc;
    sqlite3_stmt *st;
    if ((rc = stmt(s, ST_EDGE_ADD, &st))) return rc;
    int b = sqlite3_bind_int64(st, 1, run_id);
    if (!b) b = sqlite3_bind_text(st, 2, src, -1, SQLITE_STATIC);
    if (!b) b = sqlite3_bind_text(st, 3, dst, -1, SQLITE_STATIC);
    if ((rc = bound(s, st, b, "adding an edge"))) return rc;
    return step_write(s, st, "adding an edge");
}

int weft_store_call_set_status(weft_store *s, int64_t run_id, const char *key,
                               weft_call_status status, const char *error)
{
    int rc;
    if ((rc = check_writable(s)) || (rc = check_key(key))) return rc;
    if (status != WEFT_CALL_PENDING && status != WEFT_CALL_RUNNING && status != WEFT_CALL_FAILED)
        return weft_error(WEFT_EINVAL, "call status %d: use weft_store_call_complete for done",
                          (int)status);
    sqlite3_stmt *st;
    if ((rc = stmt(s, ST_CALL_STATUS, &st))) return rc;
    int b = sqlite3_bind_int64(st, 1, run_id);
    if (!b) b = sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    if (!b) b = sqlite3_bind_text(st, 3, weft_call_status_name(status), -1, SQLITE_STATIC);
    if (!b && error) b = sqlite3_bind_text(st, 4, error, -1, SQLITE_STATIC);
    if (!b) b = sqlite3_bind_double(st, 5, wall_now());
    if ((rc = bound(s, st, b, "setting a call's status"))) return rc;
    return step_write(s, st, "setting a call's status");
}

int weft_store_call_complete(weft_store *s, int64_t run_id, const char *key,
                             const char *output, size_t output_len,
                             const weft_store_call_stats *stats)
{
    int rc;
    if ((rc = check_writable(s)) || (rc = check_key(key))) return rc;
    if (!output && output_len) return weft_error(WEFT_EINVAL, "call output is NULL");
    if (output_len > INT32_MAX)
        return weft_error(WEFT_ERANGE, "call output of %zu bytes is too large", output_len);
    sqlite3_stmt *st;
    if ((rc = stmt(s, ST_CALL_COMPLETE, &st))) return rc;
    weft_store_call_stats zero = {0};
    if (!stats) stats = &zero;
    int b = sqlite3_bind_int64(st, 1, run_id);
    if (!b) b = sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    if (!b) b = sqlite3_bind_blob(st, 3, output ? output : "", (int)output_len, SQLITE_STATIC);
    if (!b) b = sqlite3_bind_int(st, 4, stats->n_prompt);
    if (!b) b = sqlite3_bind_int(st, 5, stats->n_cached);
    if (!b) b = sqlite3_bind_int(st, 6, stats->n_generated);
    if (!b) b = sqlite3_bind_double(st, 7, stats->seconds);
    if (!b) b = sqlite3_bind_double(st, 8, wall_now());
    if ((rc = bound(s, st, b, "recording a call's value"))) return rc;
    return step_write(s, st, "recording a call's value");
}

int weft_store_call_lookup(weft_store *s, int64_t run_id, const char *key, char **output,
                           size_t *output_len, weft_store_call_stats *stats)
{
    *output = NULL;
    *output_len = 0;
    int rc;
    if ((rc = check_key(key))) return rc;
    sqlite3_stmt *st;
    if ((rc = stmt(s, ST_CALL_LOOKUP, &st))) return rc;
    int b = sqlite3_bind_int64(st, 1, run_id);
    if (!b) b = sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    if ((rc = bound(s, st, b, "looking up a call"))) return rc;
    rc = sqlite3_step(st);
    int err = 0;
    if (rc == SQLITE_ROW) {
        const void *blob = sqlite3_column_blob(st, 0);
        size_t len = (size_t)sqlite3_column_bytes(st, 0);
        char *copy = weft_malloc(len + 1);
        if (!copy) {
            err = weft_error(WEFT_ENOMEM, "out of memory");
        } else {
            if (len) memcpy(copy, blob, len);
            copy[len] = 0;
            *output = copy;
            *output_len = len;
            if (stats) {
                stats->n_prompt = sqlite3_column_int(st, 1);
                stats->n_cached = sqlite3_column_int(st, 2);
                stats->n_generated = sqlite3_column_int(st, 3);
                stats->seconds = sqlite3_column_double(st, 4);
            }
        }
    } else if (rc == SQLITE_DONE) {
        err = weft_error(WEFT_ENOTFOUND, "run %lld has no completed value for call %s",
                         (long long)run_id, key);
    } else {
        err = db_error(s, rc, "looking up a call");
    }
    stmt_done(st);
    return err;
}
