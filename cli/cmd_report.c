// lightmoe report: reads an --expert-stats file (cli.h describes the
// format), prints a short summary and draws the routing as an SVG heat map.
// The file is validated strictly: whatever it holds, the command fails with
// the file and the problem named, or draws exactly what the counts say.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "util/file.h"
#include "util/json.h"
#include "util/utf8.h"

static const char *help =
    "usage: lightmoe report FILE.json [--svg OUT.svg] [--top N]\n"
    "\n"
    "Reads the expert routing counts that 'generate' or 'perplexity' wrote with\n"
    "--expert-stats FILE.json and prints, per layer, the largest and smallest share\n"
    "of the layer's routed tokens an expert got, and the hottest experts.\n"
    "\n"
    "      --svg OUT.svg     also draw a heat map: layers down, experts across, the\n"
    "                        colour of a cell the expert's share of its layer's routed\n"
    "                        tokens (every row sums to 100%), light = few, dark = many\n"
    "                        (it survives a greyscale print); dense layers are hatched\n"
    "      --top N           hottest experts to list (default 10)\n"
    "\n"
    "A file that is not valid JSON of this format (wrong shapes, counts that are not\n"
    "non-negative integers, rows that do not add up to tokens x top_k) is refused\n"
    "with the reason.\n";

// Limits beyond any model: a file past them is refused, not drawn.
#define MAX_FILE_BYTES (64u << 20)
#define MAX_LAYERS 1024
#define MAX_EXPERTS 1024
#define MAX_CELLS (256 * 1024)
#define MAX_COUNT 9007199254740992.0  // 2^53: JSON numbers are exact integers up to here

typedef struct {
    char *arch, *model_path, *command;  // model_path and command may be NULL
    int n_layers, n_experts, top_k, n_moe;
    uint8_t *moe;      // [n_layers]
    uint64_t tokens;
    uint64_t *counts;  // [n_layers][n_experts]
    uint64_t *total;   // [n_layers]: the layer's routed tokens, tokens * top_k (0 for dense layers)
    double max_share;  // over every cell
} stats;

static void stats_free(stats *s) {
    free(s->arch);
    free(s->model_path);
    free(s->command);
    free(s->moe);
    free(s->counts);
    free(s->total);
}

static double share(const stats *s, int l, int e) {
    return s->total[l] ? (double)s->counts[(size_t)l * s->n_experts + e] / (double)s->total[l] : 0;
}

static int bad(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(const char *path, const char *fmt, ...) {
    fprintf(stderr, "lightmoe report: %s: ", path);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

static const char *kind(const cJSON *v) {
    return !v ? "missing" : cJSON_IsNumber(v) ? "a number" : cJSON_IsString(v) ? "a string" : cJSON_IsArray(v) ? "an array"
           : cJSON_IsObject(v) ? "an object" : cJSON_IsBool(v) ? "a boolean" : "null";
}

// A non-negative integer of at most `max`; NULL, or what is wrong with v.
static const char *get_uint(const cJSON *v, double max, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return "is not a number";
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d)) return "is not an integer";
    if (d < 0) return "is negative";
    if (d > max) return "is too large";
    *out = (uint64_t)d;
    return NULL;
}

// A key holding an integer in [lo, hi].
static int get_field(const char *path, const cJSON *root, const char *key, int lo, int hi, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!cJSON_IsNumber(v)) return bad(path, "\"%s\" is %s, not an integer", key, kind(v));
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d)) return bad(path, "\"%s\" is %.16g, not an integer", key, d);
    if (d < lo || d > hi) return bad(path, "\"%s\" is %.16g, out of range [%d, %d]", key, d, lo, hi);
    *out = (int)d;
    return 0;
}

// An optional string (NULL stays NULL); 1 after printing if it is something else.
static int get_string(const char *path, const cJSON *obj, const char *key, bool required, char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if ((!v || cJSON_IsNull(v)) && !required) return 0;
    if (!cJSON_IsString(v)) return bad(path, "\"%s\" is %s, not a string", key, kind(v));
    if (!(*out = strdup(v->valuestring))) return bad(path, "out of memory");
    return 0;
}

static int check_counts(const char *path, const cJSON *rows, stats *s) {
    if (!cJSON_IsArray(rows)) return bad(path, "\"counts\" is %s, not an array of %d rows", kind(rows), s->n_layers);
    if (cJSON_GetArraySize(rows) != s->n_layers)
        return bad(path, "\"counts\" has %d rows but \"n_layers\" is %d", cJSON_GetArraySize(rows), s->n_layers);
    // Each token goes to top_k different experts in every MoE layer.
    uint64_t want = s->tokens * (uint64_t)s->top_k;  // < 2^53 * 2^10: no overflow
    int l = 0;
    for (const cJSON *row = rows->child; row; row = row->next, l++) {
        if (!cJSON_IsArray(row)) return bad(path, "\"counts\"[%d] is %s, not an array of %d counts", l, kind(row), s->n_experts);
        if (cJSON_GetArraySize(row) != s->n_experts)
            return bad(path, "\"counts\"[%d] has %d entries but \"n_experts\" is %d", l, cJSON_GetArraySize(row),
                       s->n_experts);
        uint64_t sum = 0;  // < 2^53 * 2^10
        int e = 0;
        for (const cJSON *c = row->child; c; c = c->next, e++) {
            uint64_t x;
            const char *why = get_uint(c, MAX_COUNT, &x);
            if (why && cJSON_IsNumber(c))
                return bad(path, "\"counts\"[%d][%d] is %.16g: it %s (counts are non-negative integers)", l, e,
                           c->valuedouble, why);
            if (why) return bad(path, "\"counts\"[%d][%d] is %s, not a count", l, e, kind(c));
            if (x > s->tokens)
                return bad(path, "\"counts\"[%d][%d] is %llu, more than the %llu tokens (an expert gets a token at most once)",
                           l, e, (unsigned long long)x, (unsigned long long)s->tokens);
            s->counts[(size_t)l * s->n_experts + e] = x;
            sum += x;
        }
        if (!s->moe[l] && sum)
            return bad(path, "layer %d is not in \"moe_layers\" but has %llu routed tokens", l, (unsigned long long)sum);
        if (s->moe[l] && sum != want)
            return bad(path, "layer %d's counts add up to %llu, not tokens x top_k = %llu x %d = %llu", l,
                       (unsigned long long)sum, (unsigned long long)s->tokens, s->top_k, (unsigned long long)want);
        s->total[l] = sum;
    }
    return 0;
}

static int check_stats(const char *path, const cJSON *root, stats *s) {
    if (!cJSON_IsObject(root)) return bad(path, "the document is %s, not an object", kind(root));
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, CLI_EXPERT_STATS_FORMAT))
        return bad(path, "not a \"" CLI_EXPERT_STATS_FORMAT "\" file (its \"format\" is %s%s%s; write one with "
                   "'lightmoe generate --expert-stats FILE.json')", cJSON_IsString(fmt) ? "\"" : "",
                   cJSON_IsString(fmt) ? fmt->valuestring : kind(fmt), cJSON_IsString(fmt) ? "\"" : "");
    int version;
    if (get_field(path, root, "version", 0, 1 << 30, &version)) return 1;
    if (version != CLI_EXPERT_STATS_VERSION)
        return bad(path, "format version %d; this lightmoe reads version %d", version, CLI_EXPERT_STATS_VERSION);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return bad(path, "\"model\" is %s, not an object", kind(model));
    if (get_string(path, model, "architecture", true, &s->arch) || get_string(path, model, "path", false, &s->model_path) ||
        get_string(path, root, "command", false, &s->command))
        return 1;
    if (get_field(path, root, "n_layers", 1, MAX_LAYERS, &s->n_layers) ||
        get_field(path, root, "n_experts", 1, MAX_EXPERTS, &s->n_experts) ||
        get_field(path, root, "top_k", 1, s->n_experts, &s->top_k))
        return 1;
    if ((long)s->n_layers * s->n_experts > MAX_CELLS)
        return bad(path, "%d layers x %d experts is more than the %d cells a report draws", s->n_layers, s->n_experts,
                   MAX_CELLS);
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(root, "tokens");
    const char *why = get_uint(tok, MAX_COUNT, &s->tokens);
    if (!tok) return bad(path, "\"tokens\" is missing");
    if (why) return bad(path, "\"tokens\" %s (want a non-negative integer)", cJSON_IsNumber(tok) ? why : "is not a number");
    s->moe = calloc((size_t)s->n_layers, 1);
    s->total = calloc((size_t)s->n_layers, sizeof *s->total);
    s->counts = calloc((size_t)s->n_layers * s->n_experts, sizeof *s->counts);
    if (!s->moe || !s->total || !s->counts) return bad(path, "out of memory");
    const cJSON *moe = cJSON_GetObjectItemCaseSensitive(root, "moe_layers");
    if (!cJSON_IsArray(moe)) return bad(path, "\"moe_layers\" is %s, not an array of layer indices", kind(moe));
    for (const cJSON *m = moe->child; m; m = m->next) {
        uint64_t l;
        if (!cJSON_IsNumber(m)) return bad(path, "\"moe_layers\" holds %s, not a layer index", kind(m));
        if (get_uint(m, MAX_COUNT, &l) || l >= (uint64_t)s->n_layers)
            return bad(path, "\"moe_layers\" holds %.16g, not a layer index in [0, %d)", m->valuedouble, s->n_layers);
        if (s->moe[l]) return bad(path, "\"moe_layers\" lists layer %d twice", (int)l);
        s->moe[l] = 1;
        s->n_moe++;
    }
    if (!s->n_moe) return bad(path, "\"moe_layers\" is empty: the model has no expert routing to report");
    if (check_counts(path, cJSON_GetObjectItemCaseSensitive(root, "counts"), s)) return 1;
    for (int l = 0; l < s->n_layers; l++)
        for (int e = 0; e < s->n_experts; e++) s->max_share = fmax(s->max_share, share(s, l, e));
    return 0;
}

static int load_stats(const char *path, stats *s) {
    char *buf;
    size_t len;
    if (lm_read_file(path, MAX_FILE_BYTES, &buf, &len)) {
        fprintf(stderr, "lightmoe report: %s\n", lm_last_error());
        return 1;
    }
    int rc = 0;
    cJSON *root = NULL;
    const char *end = NULL, *dup;
    int depth = lm_json_depth(buf, len);
    if (len == 0) rc = bad(path, "the file is empty");
    else if (strlen(buf) != len) rc = bad(path, "the file contains a NUL byte (at byte %zu): not JSON text", strlen(buf));
    else if (depth > LM_JSON_MAX_DEPTH) rc = bad(path, "JSON nested %d levels deep (at most %d)", depth, LM_JSON_MAX_DEPTH);
    else if (!(root = cJSON_ParseWithOpts(buf, &end, true)))
        rc = bad(path, "malformed JSON (near byte %ld)", end && end >= buf && end <= buf + len ? (long)(end - buf) : -1L);
    else if ((dup = lm_json_duplicate_key(root))) rc = bad(path, "key \"%.200s\" appears twice in one object", dup);
    else rc = check_stats(path, root, s);
    cJSON_Delete(root);
    free(buf);
    return rc;
}

// 1234567 -> "1,234,567"
static const char *grouped(uint64_t v, char buf[32]) {
    char d[24];
    int n = snprintf(d, sizeof d, "%llu", (unsigned long long)v), k = 0;
    for (int i = 0; i < n; i++) {
        if (i && (n - i) % 3 == 0) buf[k++] = ',';
        buf[k++] = d[i];
    }
    buf[k] = 0;
    return buf;
}

typedef struct {
    double share;
    int l, e;
} cell;

static int hotter(const void *a, const void *b) {
    const cell *x = a, *y = b;
    if (x->share != y->share) return x->share < y->share ? 1 : -1;
    return x->l != y->l ? x->l - y->l : x->e - y->e;
}

// Text from the file on a terminal: control bytes (escape sequences) as '?'.
static void put_clean(const char *t) {
    for (; *t; t++) putchar((unsigned char)*t < 0x20 || *t == 0x7f ? '?' : *t);
}

static int summary(const char *path, const stats *s, int top) {
    char b[32], c[32];
    printf("%s: ", path);
    put_clean(s->arch);
    if (s->model_path) printf(" ("), put_clean(s->model_path), printf(")");
    if (s->command) printf(", from lightmoe "), put_clean(s->command);
    printf("\n%s tokens, top-%d of %d experts, %d of %d layers MoE; an even split gives each expert %.2f%%\n",
           grouped(s->tokens, b), s->top_k, s->n_experts, s->n_moe, s->n_layers, 100.0 / s->n_experts);
    if (!s->tokens) {
        printf("no tokens were routed: nothing to compare\n");
        return 0;
    }
    printf("share of each layer's routed tokens:\n");
    for (int l = 0; l < s->n_layers; l++) {
        if (!s->moe[l]) {
            printf("  layer %3d: dense MLP\n", l);
            continue;
        }
        int hi = 0, lo = 0, unused = 0;
        for (int e = 0; e < s->n_experts; e++) {
            if (share(s, l, e) > share(s, l, hi)) hi = e;
            if (share(s, l, e) < share(s, l, lo)) lo = e;
            unused += s->counts[(size_t)l * s->n_experts + e] == 0;
        }
        printf("  layer %3d: max %5.1f%% (expert %d), min %5.1f%% (expert %d)", l, 100 * share(s, l, hi), hi,
               100 * share(s, l, lo), lo);
        if (unused) printf(", %d expert%s never used\n", unused, unused == 1 ? "" : "s");
        else printf(", max/min %.1f\n", share(s, l, hi) / share(s, l, lo));
    }
    if (top <= 0) return 0;
    cell *cells = malloc((size_t)s->n_moe * s->n_experts * sizeof *cells);
    if (!cells) {
        fprintf(stderr, "lightmoe report: out of memory\n");
        return 1;
    }
    size_t n = 0;
    for (int l = 0; l < s->n_layers; l++)
        for (int e = 0; s->moe[l] && e < s->n_experts; e++) cells[n++] = (cell){share(s, l, e), l, e};
    qsort(cells, n, sizeof *cells, hotter);
    printf("hottest experts:\n");
    for (size_t i = 0; i < n && i < (size_t)top; i++)
        printf("  layer %3d, expert %3d: %5.1f%% of the layer's routed tokens (%s of %s)\n", cells[i].l, cells[i].e,
               100 * cells[i].share, grouped(s->counts[(size_t)cells[i].l * s->n_experts + cells[i].e], b),
               grouped(s->total[cells[i].l], c));
    free(cells);
    return 0;
}

// ------------------------------------------------------------------ SVG ---

// Text for XML character data or an attribute value: markup characters
// escaped; bytes that are not UTF-8 and characters XML 1.0 forbids
// (controls, U+FFFE, U+FFFF) as U+FFFD. At most max_chars characters, then "…".
static void xml_text(FILE *f, const char *s, int max_chars) {
    size_t n = strlen(s);
    int k = 0;
    for (size_t i = 0; i < n; k++) {
        if (k == max_chars) {
            fputs("\xe2\x80\xa6", f);
            return;
        }
        uint32_t cp;
        int l = lm_utf8_step(s + i, n - i, &cp);
        if (cp == '&') fputs("&amp;", f);
        else if (cp == '<') fputs("&lt;", f);
        else if (cp == '>') fputs("&gt;", f);
        else if (cp == '"') fputs("&quot;", f);
        else if (cp == '\'') fputs("&apos;", f);
        else if (cp < 0x20 || cp == 0xFFFE || cp == 0xFFFF || cp == 0xFFFD) fputs("\xef\xbf\xbd", f);
        else fwrite(s + i, 1, (size_t)l, f);
        i += (size_t)l;
    }
}

// viridis (matplotlib's, 11 samples), read from light to dark: lightness
// falls monotonically, so the order of the shares survives a greyscale
// print and colour-blind readers; dark = many tokens, as ink on paper.
static const unsigned char ramp_rgb[11][3] = {
    {0xfd, 0xe7, 0x25}, {0xbb, 0xdf, 0x27}, {0x7a, 0xd1, 0x51}, {0x43, 0xbf, 0x71}, {0x22, 0xa8, 0x84}, {0x21, 0x90, 0x8c},
    {0x2a, 0x78, 0x8e}, {0x35, 0x60, 0x8d}, {0x41, 0x44, 0x87}, {0x48, 0x25, 0x76}, {0x44, 0x01, 0x54},
};

// Colour of t in [0, 1], interpolated linearly between the samples (as the
// colour bar's gradient is drawn, so cells and legend agree).
static void ramp(double t, char out[8]) {
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    double x = t * 10;
    int i = x >= 10 ? 9 : (int)x;
    double f = x - i;
    int c[3];
    for (int k = 0; k < 3; k++) c[k] = (int)lround(ramp_rgb[i][k] + f * (ramp_rgb[i + 1][k] - ramp_rgb[i][k]));
    snprintf(out, 8, "#%02x%02x%02x", c[0], c[1], c[2]);
}

// The smallest of 1, 2, 5, 10, 20, 50, ... that is >= x.
static int nice_int_step(double x) {
    for (int p = 1;; p *= 10) {
        if (x <= p) return p;
        if (x <= 2 * p) return 2 * p;
        if (x <= 5 * p) return 5 * p;
        if (p > 100000000) return 10 * p;
    }
}

// A step of 1, 2, 2.5 or 5 times a power of ten, about x.
static double nice_step(double x) {
    double p = pow(10, floor(log10(x))), m = x / p;
    return p * (m <= 1 ? 1 : m <= 2 ? 2 : m <= 2.5 ? 2.5 : m <= 5 ? 5 : 10);
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

static const char *base_name(const char *path, char *buf, size_t cap) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;  // "dir/" names dir
    size_t s = n;
    while (s > 0 && path[s - 1] != '/') s--;
    snprintf(buf, cap, "%.*s", (int)(n - s), path + s);
    return buf;
}

static void write_svg(FILE *f, const stats *s) {
    const int nl = s->n_layers, ne = s->n_experts;
    // Cells of whole pixels (crisp edges), the plot about 800 x 560 at most sizes.
    const int cw = clampi(800 / ne, 5, 64), ch = clampi(560 / nl, 5, 40);
    const int pw = ne * cw, ph = nl * ch;
    const int left = 64, top = 112;
    const int bar_x = left + pw + 36, bar_w = 16, bar_h = ph > 180 ? ph : 180;
    bool any_dense = s->n_moe < nl, any_empty = !s->tokens;
    int n_keys = 1 + (any_dense || any_empty);
    int key_y = top + bar_h + 30;
    // Wide enough for the legend's labels and the title (~10 px a character at 16 px).
    char name[256];
    if (s->model_path) base_name(s->model_path, name, sizeof name);
    size_t title_chars = 20 + (strlen(s->arch) < 60 ? strlen(s->arch) : 60) +
                         (s->model_path ? (strlen(name) < 60 ? strlen(name) : 60) + 3 : 0);
    int width = bar_x + 200 > 680 ? bar_x + 200 : 680;
    if (width < 32 + 10 * (int)title_chars) width = 32 + 10 * (int)title_chars;
    int height = top + ph + 56 > key_y + 18 * n_keys ? top + ph + 56 : key_y + 18 * n_keys;
    // The colour scale runs from 0 to the largest share, rounded up to a tick.
    double hi = 100 * s->max_share, step = nice_step((hi > 0 ? hi : 100.0 / ne) / 5), vmax = step * ceil(hi / step - 1e-9);
    if (vmax <= 0) vmax = step * 5;
    char col[8], b[32];

    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"11\">\n",
            width, height, width, height);
    fputs("<title>Expert routing: ", f);
    xml_text(f, s->arch, 200);
    if (s->model_path) fputs(", ", f), xml_text(f, s->model_path, 400);
    fputs("</title>\n<defs>\n<linearGradient id=\"ramp\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">\n", f);
    for (int i = 0; i <= 10; i++) {
        ramp(i / 10.0, col);
        fprintf(f, "  <stop offset=\"%.1f\" stop-color=\"%s\"/>\n", i / 10.0, col);
    }
    fputs("</linearGradient>\n"
          "<pattern id=\"hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">"
          "<rect width=\"6\" height=\"6\" fill=\"#fff\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#888\" "
          "stroke-width=\"2\"/></pattern>\n</defs>\n",
          f);
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"#fff\"/>\n", width, height);

    // Title, what was measured, and what the colour means.
    fputs("<text x=\"16\" y=\"26\" font-size=\"16\" font-weight=\"bold\">Expert routing \xe2\x80\x94 ", f);
    xml_text(f, s->arch, 60);
    if (s->model_path) fputs(" (", f), xml_text(f, name, 60), fputs(")", f);
    fprintf(f, "</text>\n<text x=\"16\" y=\"46\" font-size=\"12\">%s tokens", grouped(s->tokens, b));
    if (s->command) fputs(" (lightmoe ", f), xml_text(f, s->command, 40), fputs(")", f);
    fprintf(f, ", top-%d of %d experts, %d of %d layers MoE</text>\n", s->top_k, ne, s->n_moe, nl);
    fprintf(f, "<text x=\"16\" y=\"64\" font-size=\"12\">Colour: the expert's share of its layer's routed tokens "
               "(each row sums to 100%%; an even split is %.2f%%)</text>\n", 100.0 / ne);

    // The cells, layer 0 at the top; a row with no routing is hatched.
    fprintf(f, "<g shape-rendering=\"crispEdges\"%s>\n", cw >= 12 && ch >= 12 ? " stroke=\"#fff\" stroke-width=\"1\"" : "");
    for (int l = 0; l < nl; l++) {
        int y = top + l * ch;
        if (!s->total[l]) {
            fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"url(#hatch)\"><title>layer %d: %s</title></rect>\n",
                    left, y, pw, ch, l, s->moe[l] ? "no tokens routed" : "dense MLP (no experts)");
            continue;
        }
        for (int e = 0; e < ne; e++) {
            double sh = share(s, l, e);
            ramp(100 * sh / vmax, col);
            fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\"><title>layer %d, expert %d: %.2f%% (%s)</title></rect>\n",
                    left + e * cw, y, cw, ch, col, l, e, 100 * sh, grouped(s->counts[(size_t)l * ne + e], b));
        }
    }
    fputs("</g>\n", f);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#333\"/>\n", left, top, pw, ph);

    // Axes: label every Nth row / column so labels keep ~14 px / ~28 px apart.
    int ystep = nice_int_step(14.0 / ch), xstep = nice_int_step(28.0 / cw);
    fputs("<g stroke=\"#333\">\n", f);
    for (int l = 0; l < nl; l += ystep)
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>\n", left - 4, top + (l + 0.5) * ch, left, top + (l + 0.5) * ch);
    for (int e = 0; e < ne; e += xstep)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"/>\n", left + (e + 0.5) * cw, top + ph, left + (e + 0.5) * cw, top + ph + 4);
    fputs("</g>\n<g text-anchor=\"end\">\n", f);
    for (int l = 0; l < nl; l += ystep)
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" dy=\"0.35em\">%d</text>\n", left - 6, top + (l + 0.5) * ch, l);
    fputs("</g>\n<g text-anchor=\"middle\">\n", f);
    for (int e = 0; e < ne; e += xstep)
        fprintf(f, "<text x=\"%.1f\" y=\"%d\">%d</text>\n", left + (e + 0.5) * cw, top + ph + 16, e);
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"12\">expert</text>\n", left + pw / 2.0, top + ph + 36);
    fprintf(f, "<text transform=\"translate(20,%.1f) rotate(-90)\" font-size=\"12\">layer</text>\n</g>\n", top + ph / 2.0);

    // Colour bar: 0 at the bottom, vmax at the top, a tick every step.
    fprintf(f, "<text x=\"%d\" y=\"%d\">share of the layer&apos;s</text>\n", bar_x, top - 26);
    fprintf(f, "<text x=\"%d\" y=\"%d\">routed tokens</text>\n", bar_x, top - 12);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"url(#ramp)\" stroke=\"#333\"/>\n", bar_x, top, bar_w, bar_h);
    for (int i = 0; i * step <= vmax * (1 + 1e-9); i++) {
        double y = top + bar_h - bar_h * (i * step) / vmax;
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#333\"/>", bar_x + bar_w, y, bar_x + bar_w + 4, y);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" dy=\"0.35em\">%g%%</text>\n", bar_x + bar_w + 7, y, i * step);
    }
    // The even split, 100% / n_experts, marked across the bar and keyed below it.
    double uy = top + bar_h - bar_h * (100.0 / ne) / vmax;
    const char *mark = "stroke=\"#000\" stroke-width=\"1.5\" stroke-dasharray=\"3,2\"";
    if (100.0 / ne <= vmax)
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#fff\" stroke-width=\"3.5\"/>"
                   "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" %s/>\n",
                bar_x - 3, uy, bar_x + bar_w, uy, bar_x - 3, uy, bar_x + bar_w, uy, mark);
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" %s/><text x=\"%d\" y=\"%d\" dy=\"0.35em\">even split (%.2f%%)</text>\n",
            bar_x, key_y, bar_x + bar_w, key_y, mark, bar_x + bar_w + 7, key_y, 100.0 / ne);
    if (n_keys > 1)
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"12\" fill=\"url(#hatch)\" stroke=\"#333\"/>"
                   "<text x=\"%d\" y=\"%d\" dy=\"0.35em\">%s</text>\n",
                bar_x, key_y + 12, bar_w, bar_x + bar_w + 7, key_y + 18,
                any_empty ? "no tokens routed" : "dense layer (no experts)");
    fputs("</svg>\n", f);
}

int cmd_report(int argc, char **argv) {
    args a = {argc, 1, argv, "report", false};
    const char *file = NULL, *svg = NULL;
    int top = 10;
    for (; a.i < argc && !a.failed; a.i++) {
        if (arg_flag(&a, "--help", "-h")) {
            fputs(help, stdout);
            return 0;
        }
        if (arg_val(&a, "--svg", NULL, &svg) || arg_int(&a, "--top", NULL, 0, 1 << 20, &top)) continue;
        const char *s = argv[a.i];
        if (s[0] == '-' && s[1]) arg_unknown(&a, NULL);
        else if (file) arg_fail(&a, "one FILE.json at a time ('%s' and '%s')", file, s);
        else file = s;
    }
    if (!a.failed && !file) arg_fail(&a, "give the FILE.json that --expert-stats wrote");
    if (!a.failed && svg && (!*svg || !strcmp(svg, "-") || svg[0] == '-'))
        arg_fail(&a, "--svg needs a file name (standard output carries the summary)");
    if (a.failed) return EXIT_USAGE;

    cli_out out = {0};
    stats s = {0};
    const char *inputs[1] = {file};
    int rc = 0;
    // The output first, as everywhere: a bad path fails before any work.
    if (svg && (cli_out_check_opt("report", "--svg", svg, NULL, inputs, 1) || cli_out_open_opt("report", "--svg", svg, &out)))
        rc = 1;
    if (!rc) rc = load_stats(file, &s);
    if (!rc) rc = summary(file, &s, top);
    if (!rc && svg && !(rc = cli_out_begin("report", &out))) {
        write_svg(out.f, &s);
        if (!(rc = cli_out_commit("report", &out))) fprintf(stderr, "wrote %s\n", svg);
    }
    cli_out_abort(&out);
    stats_free(&s);
    return rc;
}
