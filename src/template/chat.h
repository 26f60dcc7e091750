// Chat templates of a checkpoint: found, parsed and tried once at start-up
// (a template the interpreter cannot handle fails there, with the reason),
// then rendered per request from an OpenAI chat request body.
#ifndef LM_TEMPLATE_CHAT_H
#define LM_TEMPLATE_CHAT_H

#include <cjson/cJSON.h>
#include <stddef.h>

typedef struct lm_chat_template lm_chat_template;

// dir/chat_template.jinja (what transformers 5 writes), else
// tokenizer_config.json's chat_template (a string, or a list of named
// templates: "default"). NULL with *found = 0 when the checkpoint has none;
// NULL with *found = 1 and the reason in why when it cannot be used.
lm_chat_template *lm_chat_template_load(const char *dir, int *found, char *why, size_t why_len);
void lm_chat_template_free(lm_chat_template *t);

// The prompt text of a chat request: its messages (content strings, or
// arrays of text parts, which are joined), tools and chat_template_kwargs,
// with add_generation_prompt, bos_token and eos_token as transformers sets
// them. malloc'ed; NULL with the reason (a bad message, raise_exception).
char *lm_chat_render(const lm_chat_template *t, const cJSON *request, char *why, size_t why_len);

#endif
