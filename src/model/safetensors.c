// safetensors reader. A file is: u64 little-endian header length N, N bytes of
// JSON ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
// "__metadata__": {...}}), then the data section; offsets are relative to it.
// Files are mmap'ed; tensors point straight into the mapping.
#include "model/safetensors.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/err.h"
#include "util/file.h"
#include "util/json.h"

// Matches the reference implementation's limit; real headers are ~1 MB.
#define ST_MAX_HEADER 100000000ull
#define ST_MAX_INDEX 100000000ull
// Largest integer a double holds exactly; cJSON gives us doubles.
#define ST_MAX_INT 9007199254740992.0

// Sizes are in bits because safetensors has sub-byte types (F4, F6_*).
static const struct {
    const char *name;
    lm_dtype dt;
    unsigned bits;
} st_dtypes[] = {
    {"F32", LM_DT_F32, 32},        {"F16", LM_DT_F16, 16},         {"BF16", LM_DT_BF16, 16},
    {"F64", LM_DT_OTHER, 64},      {"I64", LM_DT_OTHER, 64},       {"U64", LM_DT_OTHER, 64},
    {"I32", LM_DT_OTHER, 32},      {"U32", LM_DT_OTHER, 32},       {"I16", LM_DT_OTHER, 16},
    {"U16", LM_DT_OTHER, 16},      {"I8", LM_DT_OTHER, 8},         {"U8", LM_DT_OTHER, 8},
    {"BOOL", LM_DT_OTHER, 8},      {"F8_E4M3", LM_DT_OTHER, 8},    {"F8_E5M2", LM_DT_OTHER, 8},
    {"F8_E8M0", LM_DT_OTHER, 8},   {"F6_E2M3", LM_DT_OTHER, 6},    {"F6_E3M2", LM_DT_OTHER, 6},
    {"F4", LM_DT_OTHER, 4},        {"C64", LM_DT_OTHER, 64},
};

static int st_dtype_lookup(const char *s) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(s, st_dtypes[i].name) == 0) return (int)i;
    return -1;
}

// ------------------------------------------------------------------ parser ---

typedef struct st_entry {
    lm_st_tensor t;
    uint64_t begin, end;
} st_entry;

// Accepts only exact non-negative integers below 2^53 (cJSON numbers are
// doubles, so anything larger may already have lost precision).
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d >= ST_MAX_INT || d != floor(d)) return 0;
    *out = (uint64_t)d;
    return 1;
}

static int cmp_entry_name(const void *a, const void *b) {
    return strcmp(((const st_entry *)a)->t.name, ((const st_entry *)b)->t.name);
}

static int cmp_entry_offset(const void *a, const void *b) {
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static lm_status parse_tensor(const cJSON *item, const char *fname, const uint8_t *data,
                              uint64_t data_size, st_entry *e) {
    const char *name = item->string;
    memset(e, 0, sizeof *e);
    e->t.name = name;
    if (!cJSON_IsObject(item))
        return lm_err(LM_ERR_FORMAT, "%s: tensor '%.200s': entry is not a JSON object", fname, name);

    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt))
        return lm_err(LM_ERR_FORMAT, "%s: tensor '%.200s': missing or non-string \"dtype\"", fname,
                      name);
    int di = st_dtype_lookup(dt->valuestring);
    if (di < 0)
        return lm_err(LM_ERR_FORMAT, "%s: tensor '%.200s': unknown dtype '%.40s'", fname, name,
                      dt->valuestring);
    e->t.dtype_str = st_dtypes[di].name;  // static, outlives the JSON tree
    e->t.dtype = st_dtypes[di].dt;

    if (!cJSON_IsArray(shape))
        return lm_err(LM_ERR_FORMAT, "%s: tensor '%.200s': missing or non-array \"shape\"", fname,
                      name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > LM_ST_MAX_DIMS)
        return lm_err(LM_ERR_UNSUPPORTED, "%s: tensor '%.200s': %d dimensions (at most %d supported)",
                      fname, name, ndim, LM_ST_MAX_DIMS);
    e->t.ndim = ndim;
    uint64_t nelem = 1;
    int d = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, shape) {
        uint64_t v;
        if (!json_uint(dim, &v))
            return lm_err(LM_ERR_FORMAT,
                          "%s: tensor '%.200s': shape[%d] is not a non-negative integer below 2^53",
                          fname, name, d);
        e->t.shape[d++] = (int64_t)v;
        if (__builtin_mul_overflow(nelem, v, &nelem))
            return lm_err(LM_ERR_FORMAT, "%s: tensor '%.200s': shape element count overflows",
                          fname, name);
    }
    uint64_t nbits;
    if (__builtin_mul_overflow(nelem, (uint64_t)st_dtypes[di].bits, &nbits))
        return lm_err(LM_ERR_FORMAT, "%s: tensor '%.200s': byte size overflows", fname, name);
    if (nbits % 8)
        return lm_err(LM_ERR_FORMAT, "%s: tensor '%.200s': %s shape does not fill whole bytes",
                      fname, name, st_dtypes[di].name);
    uint64_t nbytes = nbits / 8;

    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return lm_err(LM_ERR_FORMAT,
                      "%s: tensor '%.200s': \"data_offsets\" is not an array of two integers", fname,
                      name);
    uint64_t begin, end;
    if (!json_uint(offs->child, &begin) || !json_uint(offs->child->next, &end))
        return lm_err(LM_ERR_FORMAT,
                      "%s: tensor '%.200s': data_offsets are not non-negative integers below 2^53",
                      fname, name);
    if (end < begin)
        return lm_err(LM_ERR_FORMAT, "%s: tensor '%.200s': data_offsets end %llu < begin %llu",
                      fname, name, (unsigned long long)end, (unsigned long long)begin);
    if (end > data_size)
        return lm_err(LM_ERR_FORMAT,
                      "%s: tensor '%.200s': data range [%llu, %llu) exceeds data section of %llu "
                      "bytes (file truncated?)",
                      fname, name, (unsigned long long)begin, (unsigned long long)end,
                      (unsigned long long)data_size);
    if (end - begin != nbytes)
        return lm_err(LM_ERR_FORMAT,
                      "%s: tensor '%.200s': data range [%llu, %llu) is %llu bytes but %s shape "
                      "needs %llu",
                      fname, name, (unsigned long long)begin, (unsigned long long)end,
                      (unsigned long long)(end - begin), st_dtypes[di].name,
                      (unsigned long long)nbytes);
    e->begin = begin;
    e->end = end;
    e->t.nbytes = (size_t)nbytes;
    e->t.data = data + begin;
    return LM_OK;
}

static lm_status parse_json(const cJSON *root, const char *fname, const uint8_t *data,
                            uint64_t data_size, lm_st_tensor_cb cb, void *user) {
    if (!cJSON_IsObject(root))
        return lm_err(LM_ERR_FORMAT, "%s: header JSON is not an object", fname);

    size_t n = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, root) n++;
    st_entry *ents = lm_calloc(n, sizeof *ents);
    if (!ents) return LM_ERR_OOM;

    lm_status st = LM_OK;
    size_t k = 0;
    cJSON_ArrayForEach(item, root) {
        if (item->string && strcmp(item->string, "__metadata__") == 0) {
            // Free-form string map (e.g. {"format": "pt"}); checked, not kept.
            if (!cJSON_IsObject(item)) {
                st = lm_err(LM_ERR_FORMAT, "%s: \"__metadata__\" is not an object", fname);
                goto out;
            }
            const cJSON *m;
            cJSON_ArrayForEach(m, item) {
                if (!cJSON_IsString(m)) {
                    st = lm_err(LM_ERR_FORMAT, "%s: __metadata__ value '%.200s' is not a string",
                                fname, m->string ? m->string : "");
                    goto out;
                }
            }
            continue;
        }
        if (!item->string) {  // cannot happen for a parsed object; keeps strcmp safe
            st = lm_err(LM_ERR_FORMAT, "%s: header entry without a name", fname);
            goto out;
        }
        st = parse_tensor(item, fname, data, data_size, &ents[k]);
        if (st != LM_OK) goto out;
        k++;
    }

    // cJSON keeps repeated keys, so duplicates show up as equal neighbours.
    qsort(ents, k, sizeof *ents, cmp_entry_name);
    for (size_t i = 1; i < k; i++)
        if (strcmp(ents[i - 1].t.name, ents[i].t.name) == 0) {
            st = lm_err(LM_ERR_FORMAT, "%s: tensor '%.200s' appears twice in the header", fname,
                        ents[i].t.name);
            goto out;
        }

    // Empty tensors occupy no bytes, so only non-empty ones can collide.
    qsort(ents, k, sizeof *ents, cmp_entry_offset);
    const st_entry *prev = NULL;
    for (size_t i = 0; i < k; i++) {
        if (ents[i].begin == ents[i].end) continue;
        if (prev && ents[i].begin < prev->end) {
            st = lm_err(LM_ERR_FORMAT,
                        "%s: tensors '%.200s' [%llu, %llu) and '%.200s' [%llu, %llu) overlap", fname,
                        prev->t.name, (unsigned long long)prev->begin,
                        (unsigned long long)prev->end, ents[i].t.name,
                        (unsigned long long)ents[i].begin, (unsigned long long)ents[i].end);
            goto out;
        }
        prev = &ents[i];
    }

    for (size_t i = 0; cb && i < k; i++) {
        st = cb(user, &ents[i].t);
        if (st != LM_OK) goto out;
    }
out:
    free(ents);
    return st;
}

static int json_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

lm_status lm_st_parse(const uint8_t *buf, size_t size, const char *fname, lm_st_tensor_cb cb,
                      void *user) {
    if (!fname) fname = "(memory)";
    if (!buf && size) return lm_err(LM_ERR_INVALID_ARG, "%s: NULL buffer", fname);
    if (size < 8)
        return lm_err(LM_ERR_FORMAT,
                      "%s: truncated: file is %zu bytes, shorter than the 8-byte header length",
                      fname, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > size - 8)
        return lm_err(LM_ERR_FORMAT,
                      "%s: truncated: header length %llu exceeds the %zu bytes after it", fname,
                      (unsigned long long)hlen, size - 8);
    if (hlen >= ST_MAX_HEADER)
        return lm_err(LM_ERR_FORMAT, "%s: header length %llu exceeds the %llu-byte limit", fname,
                      (unsigned long long)hlen, ST_MAX_HEADER);
    const uint8_t *hdr = buf + 8;
    if (memchr(hdr, 0, hlen))
        return lm_err(LM_ERR_FORMAT, "%s: header contains a NUL byte", fname);

    // A NUL-terminated copy, so that cJSON cannot run past the header even if
    // it ignored the length somewhere.
    char *text = lm_malloc(hlen + 1);
    if (!text) return LM_ERR_OOM;
    memcpy(text, hdr, hlen);
    text[hlen] = 0;
    const char *end = NULL;
    int depth = lm_json_depth(text, hlen);
    cJSON *root = depth > LM_JSON_MAX_DEPTH ? NULL : cJSON_ParseWithLengthOpts(text, hlen, &end, 0);
    lm_status st;
    if (depth > LM_JSON_MAX_DEPTH) {
        st = lm_err(LM_ERR_FORMAT, "%s: header JSON nested %d levels deep (at most %d)", fname, depth, LM_JSON_MAX_DEPTH);
        goto out;
    }
    if (!root) {
        size_t pos = end ? (size_t)(end - text) : 0;
        st = lm_err(LM_ERR_FORMAT, "%s: header is not valid JSON (error near byte %zu of %llu)",
                    fname, pos, (unsigned long long)hlen);
        goto out;
    }
    // Repeated tensor names are reported below by name; a repeated field
    // inside an entry ("dtype" twice) would be read as its first value.
    for (const cJSON *e = cJSON_IsObject(root) ? root->child : NULL; e; e = e->next) {
        const char *dup = lm_json_duplicate_key(e);
        if (dup) {
            st = lm_err(LM_ERR_FORMAT, "%s: key \"%.200s\" appears twice in the header entry '%.200s'", fname, dup,
                        e->string ? e->string : "");
            goto out;
        }
    }
    // Writers pad the header with spaces for alignment; anything else is junk.
    for (size_t i = (size_t)(end - text); i < hlen; i++)
        if (!json_ws((uint8_t)text[i])) {
            st = lm_err(LM_ERR_FORMAT, "%s: unexpected bytes after the header JSON at byte %zu",
                        fname, i);
            goto out;
        }
    st = parse_json(root, fname, hdr + hlen, size - 8 - hlen, cb, user);
out:
    cJSON_Delete(root);
    free(text);
    return st;
}

// --------------------------------------------------------------------- set ---

typedef struct st_file {
    char *path;
    void *map;
    size_t size;
} st_file;

struct lm_st_set {
    st_file *files;
    int n_files;
    lm_st_tensor *tensors;  // sorted by name once the set is complete
    int n, cap;
};

void lm_st_close(lm_st_set *set) {
    if (!set) return;
    for (int i = 0; i < set->n_files; i++) {
        if (set->files[i].map) munmap(set->files[i].map, set->files[i].size);
        free(set->files[i].path);
    }
    for (int i = 0; i < set->n; i++) free((char *)set->tensors[i].name);
    free(set->files);
    free(set->tensors);
    free(set);
}

int lm_st_count(const lm_st_set *set) { return set ? set->n : 0; }

const lm_st_tensor *lm_st_get(const lm_st_set *set, int i) {
    return set && i >= 0 && i < set->n ? &set->tensors[i] : NULL;
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const lm_st_tensor *)a)->name, ((const lm_st_tensor *)b)->name);
}

const lm_st_tensor *lm_st_find(const lm_st_set *set, const char *name) {
    if (!set || !name || set->n == 0) return NULL;
    lm_st_tensor key = {.name = name};
    return bsearch(&key, set->tensors, (size_t)set->n, sizeof key, cmp_tensor_name);
}

const char *lm_st_file_path(const lm_st_set *set, int file) {
    return set && file >= 0 && file < set->n_files ? set->files[file].path : NULL;
}

static lm_st_set *set_new(void) { return lm_calloc(1, sizeof(lm_st_set)); }

typedef struct add_ctx {
    lm_st_set *set;
    int file;
} add_ctx;

static lm_status add_tensor_cb(void *user, const lm_st_tensor *t) {
    add_ctx *c = user;
    lm_st_set *s = c->set;
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 256;
        lm_st_tensor *nt = realloc(s->tensors, (size_t)cap * sizeof *nt);
        if (!nt) return lm_err(LM_ERR_OOM, "out of memory growing the tensor table to %d", cap);
        s->tensors = nt;
        s->cap = cap;
    }
    lm_st_tensor copy = *t;
    copy.name = lm_strdup(t->name);  // t->name lives in the JSON tree, freed after parsing
    if (!copy.name) return LM_ERR_OOM;
    copy.file = c->file;
    s->tensors[s->n++] = copy;
    return LM_OK;
}

// Maps `path` and adds its tensors to the set as file number set->n_files.
static lm_status set_add_file(lm_st_set *s, const char *path) {
    st_file *nf = realloc(s->files, (size_t)(s->n_files + 1) * sizeof *nf);
    if (!nf) return lm_err(LM_ERR_OOM, "%s: out of memory", path);
    s->files = nf;
    st_file *f = &s->files[s->n_files];
    memset(f, 0, sizeof *f);
    f->path = lm_strdup(path);
    if (!f->path) return LM_ERR_OOM;
    s->n_files++;  // from here on lm_st_close cleans up this entry

    int fd;
    uint64_t fsize;
    lm_status st = lm_open_regular(path, &fd, &fsize);
    if (st) return st;
    if (fsize < 8) {  // also avoids mmap of 0 bytes, which fails
        close(fd);
        return lm_err(LM_ERR_FORMAT,
                      "%s: truncated: file is %llu bytes, shorter than the 8-byte header length",
                      path, (unsigned long long)fsize);
    }
    void *map = mmap(NULL, (size_t)fsize, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);  // the mapping keeps the file alive
    if (map == MAP_FAILED) return lm_err(LM_ERR_IO, "%s: cannot mmap: %s", path, strerror(e));
    f->map = map;
    f->size = (size_t)fsize;

    add_ctx c = {s, s->n_files - 1};
    return lm_st_parse(map, f->size, path, add_tensor_cb, &c);
}

// Sorts the table for lm_st_find and rejects a name found in two shards.
static lm_status set_finish(lm_st_set *s, const char *what) {
    if (s->n > 1) qsort(s->tensors, (size_t)s->n, sizeof *s->tensors, cmp_tensor_name);
    for (int i = 1; i < s->n; i++)
        if (strcmp(s->tensors[i - 1].name, s->tensors[i].name) == 0)
            return lm_err(LM_ERR_FORMAT, "%s: tensor '%.200s' is in both %s and %s", what,
                          s->tensors[i].name, s->files[s->tensors[i - 1].file].path,
                          s->files[s->tensors[i].file].path);
    return LM_OK;
}

lm_status lm_st_open_file(const char *path, lm_st_set **out) {
    if (!path || !out) return lm_err(LM_ERR_INVALID_ARG, "lm_st_open_file: NULL argument");
    *out = NULL;
    lm_st_set *s = set_new();
    if (!s) return LM_ERR_OOM;
    lm_status st = set_add_file(s, path);
    if (st == LM_OK) st = set_finish(s, path);
    if (st != LM_OK) {
        lm_st_close(s);
        return st;
    }
    *out = s;
    return LM_OK;
}

// ------------------------------------------------------------- directories ---

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

// A shard name from the index must stay inside the model directory.
static int shard_name_ok(const char *s) {
    return s[0] && !strchr(s, '/') && !strchr(s, '\\') && !strstr(s, "..");
}

static lm_status open_index(const char *dir, const char *ipath, lm_st_set **out) {
    char *text = NULL;
    size_t len = 0;
    lm_status st = lm_read_file(ipath, ST_MAX_INDEX, &text, &len);
    if (st != LM_OK) return st;

    cJSON *root = lm_json_depth(text, len) > LM_JSON_MAX_DEPTH ? NULL : cJSON_ParseWithLength(text, len);
    const char *dup = root ? lm_json_duplicate_key(root) : NULL;
    const char **names = NULL;  // distinct shard names, sorted; index = file number
    size_t n_names = 0;
    lm_st_set *s = NULL;
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!root) {
        st = lm_err(LM_ERR_FORMAT, "%s: not valid JSON", ipath);
        goto out;
    }
    if (dup) {
        st = lm_err(LM_ERR_FORMAT, "%s: key \"%.200s\" appears twice in one object", ipath, dup);
        goto out;
    }
    if (!cJSON_IsObject(wm)) {
        st = lm_err(LM_ERR_FORMAT, "%s: missing or non-object \"weight_map\"", ipath);
        goto out;
    }
    size_t n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e)) {
            st = lm_err(LM_ERR_FORMAT, "%s: weight_map entry '%.200s' is not a string", ipath,
                        e->string);
            goto out;
        }
        if (!shard_name_ok(e->valuestring)) {
            st = lm_err(LM_ERR_FORMAT,
                        "%s: weight_map entry '%.200s' names shard '%.200s', which is not a plain "
                        "file name in the model directory",
                        ipath, e->string, e->valuestring);
            goto out;
        }
        n++;
    }
    if (n == 0) {
        st = lm_err(LM_ERR_FORMAT, "%s: weight_map is empty", ipath);
        goto out;
    }

    names = lm_malloc(n * sizeof *names);
    if (!names) {
        st = LM_ERR_OOM;
        goto out;
    }
    cJSON_ArrayForEach(e, wm) names[n_names++] = e->valuestring;
    qsort(names, n_names, sizeof *names, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < n_names; i++)
        if (u == 0 || strcmp(names[u - 1], names[i]) != 0) names[u++] = names[i];
    n_names = u;

    if (!(s = set_new())) {
        st = LM_ERR_OOM;
        goto out;
    }
    for (size_t i = 0; i < n_names; i++) {
        char *p = lm_path_join(dir, names[i]);
        if (!p) {
            st = LM_ERR_OOM;
            goto out;
        }
        st = set_add_file(s, p);
        free(p);
        if (st == LM_ERR_IO) lm_err_wrap(st, "%s names a shard that cannot be opened", ipath);
        if (st != LM_OK) goto out;
    }
    st = set_finish(s, ipath);
    if (st != LM_OK) goto out;

    cJSON_ArrayForEach(e, wm) {
        const char **sh = bsearch(&e->valuestring, names, n_names, sizeof *names, cmp_str);
        int file = (int)(sh - names);
        const lm_st_tensor *t = lm_st_find(s, e->string);
        if (!t) {
            st = lm_err(LM_ERR_NOT_FOUND, "%s: tensor '%.200s' is not in shard %s", ipath,
                        e->string, s->files[file].path);
            goto out;
        }
        if (t->file != file) {
            st = lm_err(LM_ERR_NOT_FOUND, "%s: tensor '%.200s' is not in shard %s (found in %s)",
                        ipath, e->string, s->files[file].path, s->files[t->file].path);
            goto out;
        }
    }
    *out = s;
    s = NULL;
out:
    lm_st_close(s);
    free(names);
    cJSON_Delete(root);
    free(text);
    return st;
}

// Anything at that name (even a broken symlink or a directory) is what the
// user meant; opening it then says what is wrong with it.
static bool path_present(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0;
}

static int has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a > b && strcmp(s + a - b, suf) == 0;
}

lm_status lm_st_open_dir(const char *dir, lm_st_set **out) {
    if (!dir || !out) return lm_err(LM_ERR_INVALID_ARG, "lm_st_open_dir: NULL argument");
    *out = NULL;
    lm_status st;
    // transformers' order: a single model.safetensors first, then the index.
    char *p = lm_path_join(dir, "model.safetensors");
    if (!p) return LM_ERR_OOM;
    if (path_present(p)) {
        st = lm_st_open_file(p, out);
        free(p);
        return st;
    }
    free(p);

    p = lm_path_join(dir, "model.safetensors.index.json");
    if (!p) return LM_ERR_OOM;
    if (path_present(p)) {
        st = open_index(dir, p, out);
        free(p);
        return st;
    }
    free(p);

    // No standard name: accept a lone *.safetensors file, since nothing else
    // could tell us which of several to load.
    DIR *d = opendir(dir);
    if (!d) return lm_err(LM_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    char *first = NULL, *second = NULL;
    int count = 0;
    struct dirent *de;
    st = LM_OK;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || !has_suffix(de->d_name, ".safetensors")) continue;
        if (count < 2) {
            char *c = lm_strdup(de->d_name);
            if (!c) {
                st = LM_ERR_OOM;
                break;
            }
            *(count == 0 ? &first : &second) = c;
        }
        count++;
    }
    closedir(d);
    if (st == LM_OK) {
        if (count == 0) {
            st = lm_err(LM_ERR_IO, "no model.safetensors or model.safetensors.index.json in %s",
                        dir);
        } else if (count > 1) {
            st = lm_err(LM_ERR_FORMAT,
                        "%s: %d *.safetensors files (%s, %s%s) but no "
                        "model.safetensors.index.json saying which to load",
                        dir, count, first, second, count > 2 ? ", ..." : "");
        } else if (!(p = lm_path_join(dir, first))) {
            st = LM_ERR_OOM;
        } else {
            st = lm_st_open_file(p, out);
            free(p);
        }
    }
    free(first);
    free(second);
    return st;
}
