// Internal parts of the tokenizer (src/tokenizer/*.c). The public API is in
// lightmoe.h. The pipeline mirrors Hugging Face `tokenizers` step for step so
// that ids match it exactly:
//   added-token split (raw text) -> normalizer -> added-token split (normalized)
//   -> pre-tokenizer -> BPE per piece -> post-processor
// and decoding runs the decoder chain over the token strings.
#ifndef LM_TOKENIZER_TOKENIZER_H
#define LM_TOKENIZER_TOKENIZER_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lightmoe.h"
#include "util/buf.h"
#include "util/hashmap.h"
#include "util/utf8.h"

// ------------------------------------------------------------------ regex ---

typedef struct tk_regex {
    pcre2_code *code;
    pcre2_match_context *mctx;  // heap and match limits: a hostile pattern fails, not eats memory
    char *what;                 // "FILE: Split pre-tokenizer 'PATTERN'", for match errors
} tk_regex;

// A time budget for the regex matching of one encode or decode call, checked
// between matches: a pattern whose matching is superlinear (each match
// scanning to the end of the text) would otherwise take hours on a long
// text. Generous (5 s + 10 s per MB; real tokenizers run at ~5 MB/s), so
// only such patterns hit it. Thread-local; 0 = no budget.
void tk_budget_begin(size_t bytes);
void tk_budget_end(void);
void tk_budget_base(double seconds);  // the fixed part (5 s); tests lower it
bool tk_budget_exceeded(void);       // for loops other than the regex's

// Growth limit of the text through normalizers, pre-tokenizers and decoders
// (a Replace repeated in a Sequence multiplies it): at most this factor of
// the input plus TK_GROWTH_SLACK bytes.
#define TK_GROWTH 256
#define TK_GROWTH_SLACK ((size_t)1 << 20)

// Compiles an Oniguruma-style pattern from tokenizer.json (literal: match the
// text as is). `what` names the pattern in error messages.
lm_status tk_regex_compile(tk_regex *re, const char *pattern, bool literal, const char *what);
void tk_regex_free(tk_regex *re);

// A cut of a string into consecutive segments, each a match or not.
typedef struct tk_seg {
    size_t s, e;
    bool match;
} tk_seg;

typedef struct tk_segs {
    tk_seg *v;
    size_t n, cap;
} tk_segs;

// Matches of re over s, as tokenizers' Pattern::find_matches: the whole string
// covered by segments, matches and the gaps between them.
lm_status tk_regex_segments(const tk_regex *re, const char *s, size_t n, tk_segs *out);

// ------------------------------------------------------------- components ---

enum { TK_SPLIT_REMOVED, TK_SPLIT_ISOLATED, TK_SPLIT_MERGED_PREV, TK_SPLIT_MERGED_NEXT,
       TK_SPLIT_CONTIGUOUS };

enum { TK_PREPEND_ALWAYS, TK_PREPEND_FIRST, TK_PREPEND_NEVER };

typedef enum {
    TK_NORM_NFC, TK_NORM_NFD, TK_NORM_NFKC, TK_NORM_NFKD, TK_NORM_LOWERCASE,
    TK_NORM_PREPEND, TK_NORM_APPEND, TK_NORM_REPLACE, TK_NORM_STRIP,
} tk_norm_type;

typedef struct tk_norm {
    tk_norm_type type;
    char *str;      // Prepend / Append text; Replace content
    tk_regex re;    // Replace pattern
    bool left, right;  // Strip sides
} tk_norm;

typedef enum {
    TK_PRE_SPLIT, TK_PRE_BYTELEVEL, TK_PRE_METASPACE, TK_PRE_DIGITS, TK_PRE_WHITESPACE,
    TK_PRE_WHITESPACE_SPLIT, TK_PRE_PUNCTUATION, TK_PRE_BERT,
} tk_pre_type;

typedef struct tk_pre {
    tk_pre_type type;
    tk_regex re;             // Split pattern; ByteLevel / Whitespace built-in regex
    int behavior;            // TK_SPLIT_*
    bool invert;
    bool add_prefix_space;   // ByteLevel
    bool use_regex;          // ByteLevel
    uint32_t replacement;    // Metaspace
    int prepend_scheme;      // Metaspace, TK_PREPEND_*
    bool split;              // Metaspace
    bool individual_digits;  // Digits
} tk_pre;

typedef enum {
    TK_DEC_REPLACE, TK_DEC_BYTE_FALLBACK, TK_DEC_FUSE, TK_DEC_STRIP, TK_DEC_BYTELEVEL,
    TK_DEC_METASPACE,
} tk_dec_type;

typedef struct tk_dec {
    tk_dec_type type;
    tk_regex re;              // Replace pattern
    char *content;            // Replace
    uint32_t strip_char;      // Strip
    int start, stop;          // Strip
    uint32_t replacement;     // Metaspace
    int prepend_scheme;       // Metaspace
} tk_dec;

typedef struct tk_added {
    const char *content;  // as written
    size_t len;
    int32_t id;
    bool special, lstrip, rstrip, single_word, normalized;
} tk_added;

// Literal matcher over a subset of the added tokens (leftmost-longest, as
// tokenizers' Aho-Corasick set): a byte trie, so finding the longest token
// at a position costs its length, whatever the number of tokens.
typedef struct tk_trie {
    int32_t root[256];  // node of each first byte, -1: none
    int32_t *child;     // [nodes] first child, -1: none
    int32_t *next;      // [nodes] next sibling, -1: none
    int32_t *tok;       // [nodes] added token ending here (index into lm_tokenizer.added), -1: none
    uint8_t *byte;      // [nodes]
    int n_nodes, cap;
    int n;              // tokens in the trie
} tk_trie;

struct lm_tokenizer {
    char *path;  // for error messages
    char *dir;   // directory of tokenizer.json (tokenizer_config.json); NULL when parsed from memory
    lm_arena arena;

    // id -> token string (model vocab and added tokens); NULL where an id is unused
    int32_t n_ids;
    const char **tok_str;
    uint32_t *tok_len;
    uint8_t *tok_flags;  // TK_FLAG_*

    // BPE model
    lm_strmap vocab;   // model vocabulary only (added tokens are not BPE symbols)
    lm_pairmap merges;
    int32_t unk_id;    // -1: none
    bool byte_fallback, fuse_unk, ignore_merges;
    char *subword_prefix, *word_suffix;  // NULL when absent
    int32_t byte_tok[256];  // ids of "<0xNN>" (byte_fallback), -1 if missing

    tk_added *added;
    int n_added;
    tk_trie trie_raw, trie_norm;  // non-normalized / normalized added tokens

    tk_norm *norm;
    int n_norm;
    tk_pre *pre;
    int n_pre;
    tk_dec *dec;
    int n_dec;
    bool has_decoder;  // without one, tokens are joined with spaces

    // post-processor (single sequence): ids before and after the text
    lm_ids post_prefix, post_suffix;

    int32_t bos, eos;
};

enum { TK_FLAG_ADDED = 1, TK_FLAG_SPECIAL = 2 };

// GPT-2 byte <-> unicode mapping (ByteLevel): printable bytes stand for
// themselves, the others are moved to U+0100 and up.
uint32_t tk_byte_to_cp(unsigned b);
int tk_cp_to_byte(uint32_t cp);  // -1 if cp is not in the mapping

// --------------------------------------------------------------- pipeline ---

// Pieces of text during encoding: a byte range of buf; id >= 0 once the
// piece is an added token (later stages leave those alone).
typedef struct tk_split {
    size_t off, len;
    int32_t id;
    bool at_start;  // starts at offset 0 of the original input (Metaspace "first")
} tk_split;

typedef struct tk_splits {
    tk_split *v;
    size_t n, cap;
    lm_buf buf;
} tk_splits;

bool tk_splits_add(tk_splits *s, const char *text, size_t len, int32_t id, bool at_start);
void tk_splits_free(tk_splits *s);

// Parses tokenizer.json text held in memory (no tokenizer_config.json);
// `name` is used in messages. For tests and fuzzing.
lm_status tk_tokenizer_parse(const char *json, size_t len, const char *name, lm_tokenizer **out);

lm_status tk_normalize(const lm_tokenizer *t, const char *s, size_t n, lm_buf *out);
lm_status tk_pretokenize(const lm_tokenizer *t, tk_splits *sp);
lm_status tk_bpe(const lm_tokenizer *t, const char *s, size_t n, lm_ids *out);
lm_status tk_decode_tokens(const lm_tokenizer *t, const int32_t *ids, size_t n,
                           bool skip_special, lm_buf *out);

#endif
