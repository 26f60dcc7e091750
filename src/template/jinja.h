// Chat templates: a Jinja interpreter whose output is byte-identical to
// Python's jinja2 configured the way transformers renders chat templates
// (ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
// extensions=[loopcontrols, generation]), transformers' own `tojson`
// (json.dumps with ensure_ascii=False), raise_exception, strftime_now).
//
//   lm_tmpl *t;
//   if (lm_tmpl_parse(src, strlen(src), &t)) { puts(lm_last_error()); ... }
//   char *text; size_t n;
//   if (lm_tmpl_render(t, ctx, &text, &n)) { puts(lm_last_error()); ... }
//   ... free(text); lm_tmpl_free(t);
//
// The context is a JSON object; each member is a template variable
// (messages, tools, add_generation_prompt, bos_token, eos_token,
// enable_thinking, ...). Members override the globals range, dict,
// namespace, raise_exception and strftime_now, as in jinja2.
//
// What is supported is the subset real chat templates use (see
// docs/CHAT_TEMPLATES.md). Anything else fails: at parse time whenever it
// can be seen there (unknown or unsupported tag, filter, test, method,
// global function), otherwise at render time with a message that says what
// is not supported. The engine never silently produces text jinja2 would
// not.
//
// A parsed template is immutable: any number of threads may render it at
// once. Rendering is bounded (output size, memory, steps, recursion depth):
// a template that exceeds a bound fails with LM_ERR_RANGE.
#ifndef LM_TEMPLATE_JINJA_H
#define LM_TEMPLATE_JINJA_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "lightmoe.h"

typedef struct lm_tmpl lm_tmpl;

// Parses template source (UTF-8). Errors: LM_ERR_FORMAT for a syntax error,
// LM_ERR_UNSUPPORTED for valid Jinja this engine does not implement; the
// message (lm_last_error) gives "line L, column C: reason".
lm_status lm_tmpl_parse(const char *src, size_t len, lm_tmpl **out);

// Renders with the variables of `ctx` (a JSON object, or NULL for none).
// On success *out is a NUL-terminated malloc'ed string (free() it) of
// *out_len bytes (out_len may be NULL). Errors: LM_ERR_INVALID_ARG when the
// template called raise_exception(msg) (the message is msg), LM_ERR_FORMAT
// for other render errors (jinja2 would raise too: undefined attribute of an
// undefined value, a type error, ...), LM_ERR_UNSUPPORTED, LM_ERR_RANGE
// (a bound), LM_ERR_OOM.
//
// cJSON stores every number as a double: a number that is integral and
// within +-2^53 becomes an int (rendered "1"), any other a float ("1.5");
// a JSON "1.0" therefore renders as jinja2 renders 1, not 1.0. Strings
// holding U+0000 are cut there by cJSON. lm_tmpl_render_json has neither
// limitation.
lm_status lm_tmpl_render(const lm_tmpl *t, const cJSON *ctx, char **out, size_t *out_len);

// Same, with the context given as JSON text (an object), parsed the way
// Python's json.loads parses it: ints stay ints (an int beyond 64 bits is
// refused as unsupported), "1.0" stays a float, NaN/Infinity are accepted,
// a duplicated key keeps its first position and its last value.
lm_status lm_tmpl_render_json(const lm_tmpl *t, const char *json, size_t json_len, char **out,
                              size_t *out_len);

// Bounds of each render of t (0 keeps the default): evaluation steps
// (default 20 million; a 1,000-message Qwen3 conversation takes about
// 100,000) and memory (default 512 MiB plus 16 bytes per context byte).
// Not to be called while t is being rendered.
void lm_tmpl_set_limits(lm_tmpl *t, uint64_t max_steps, size_t max_memory);

void lm_tmpl_free(lm_tmpl *t);

#endif
