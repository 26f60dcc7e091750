#include "template/chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lightmoe.h"
#include "template/jinja.h"
#include "util/err.h"
#include "util/file.h"

struct lm_chat_template {
    lm_tmpl *t;
    char *bos, *eos;
};

// A special token as tokenizer_config.json gives it: a string or {"content": ...}.
static char *token_str(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    return strdup(cJSON_IsString(v) ? v->valuestring : "");
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = (n + 65536 + 1) * 2;
            if (cap > ((size_t)64 << 20)) break;  // no real template is this large
            char *t = realloc(b, cap);
            if (!t) break;
            b = t;
        }
        size_t r = fread(b + n, 1, 65536, f);
        n += r;
        if (r < 65536) break;
    }
    fclose(f);
    if (b) b[n] = 0;
    *len = n;
    return b;
}

lm_chat_template *lm_chat_template_load(const char *dir, int *found, char *why, size_t why_len) {
    *found = 0;
    char path[4096];
    size_t len = 0, tlen = 0;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    char *cfg_text = slurp(path, &len);
    cJSON *cfg = cfg_text ? cJSON_ParseWithLength(cfg_text, len) : NULL;
    free(cfg_text);
    if (cfg_text && !cfg) {
        *found = 1;
        snprintf(why, why_len, "%s is not valid JSON", path);
        return NULL;
    }
    char src_name[4200];
    snprintf(src_name, sizeof src_name, "%s/chat_template.jinja", dir);
    char *src = slurp(src_name, &tlen);
    if (!src && cfg) {
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
        if (cJSON_IsArray(ct)) {  // [{"name": ..., "template": ...}]: the default one
            const cJSON *e, *pick = NULL;
            cJSON_ArrayForEach(e, ct) {
                const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
                if (cJSON_IsString(nm) && !strcmp(nm->valuestring, "default")) pick = e;
            }
            ct = pick ? cJSON_GetObjectItemCaseSensitive(pick, "template") : NULL;
        }
        if (cJSON_IsString(ct)) {
            src = strdup(ct->valuestring);
            tlen = src ? strlen(src) : 0;
            snprintf(src_name, sizeof src_name, "%s (chat_template)", path);
        }
    }
    if (!src) {
        cJSON_Delete(cfg);
        return NULL;
    }
    *found = 1;
    lm_chat_template *t = calloc(1, sizeof *t);
    if (!t || lm_tmpl_parse(src, tlen, &t->t)) {
        snprintf(why, why_len, "the chat template in %s cannot be used: %s", src_name,
                 t ? lm_last_error() : "out of memory");
        free(src);
        cJSON_Delete(cfg);
        lm_chat_template_free(t);
        return NULL;
    }
    free(src);
    t->bos = token_str(cfg, "bos_token");
    t->eos = token_str(cfg, "eos_token");
    cJSON_Delete(cfg);
    // a dry render: what a first request would do
    cJSON *req = cJSON_Parse("{\"messages\":[{\"role\":\"system\",\"content\":\"You are helpful.\"},"
                             "{\"role\":\"user\",\"content\":\"Hello\"}]}");
    char *out = req ? lm_chat_render(t, req, why, why_len) : NULL;
    if (!out && req) {  // some templates refuse a system turn: try without
        cJSON_DeleteItemFromArray(cJSON_GetObjectItemCaseSensitive(req, "messages"), 0);
        out = lm_chat_render(t, req, why, why_len);
    }
    cJSON_Delete(req);
    if (!out) {
        char inner[512];
        snprintf(inner, sizeof inner, "%s", why);
        snprintf(why, why_len, "the chat template in %s fails on a plain conversation: %s", src_name, inner);
        lm_chat_template_free(t);
        return NULL;
    }
    free(out);
    return t;
}

void lm_chat_template_free(lm_chat_template *t) {
    if (!t) return;
    lm_tmpl_free(t->t);
    free(t->bos);
    free(t->eos);
    free(t);
}

// A copy of one message with its content as a string (text parts joined).
static cJSON *message_copy(const cJSON *m, int i, char *why, size_t why_len) {
    if (!cJSON_IsObject(m)) {
        snprintf(why, why_len, "messages[%d] is not an object", i);
        return NULL;
    }
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
    if (!cJSON_IsString(role) || !role->valuestring[0]) {
        snprintf(why, why_len, "messages[%d] has no 'role' string", i);
        return NULL;
    }
    cJSON *c = cJSON_Duplicate(m, 1);
    if (!c) return NULL;
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (cJSON_IsArray(content)) {
        size_t n = 0;
        char *text = calloc(1, 1);
        const cJSON *p;
        cJSON_ArrayForEach(p, content) {
            const cJSON *ty = cJSON_GetObjectItemCaseSensitive(p, "type"), *tx = cJSON_GetObjectItemCaseSensitive(p, "text");
            if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "text") || !cJSON_IsString(tx)) {
                snprintf(why, why_len, "messages[%d].content: only text parts ({\"type\": \"text\", \"text\": ...}) are "
                         "supported", i);
                free(text);
                cJSON_Delete(c);
                return NULL;
            }
            size_t l = strlen(tx->valuestring);
            char *t = text ? realloc(text, n + l + 1) : NULL;
            if (!t) {
                free(text);
                cJSON_Delete(c);
                return NULL;
            }
            text = t;
            memcpy(text + n, tx->valuestring, l + 1);
            n += l;
        }
        cJSON_ReplaceItemInObjectCaseSensitive(c, "content", cJSON_CreateString(text));
        free(text);
    } else if (content && !cJSON_IsString(content) && !cJSON_IsNull(content)) {
        snprintf(why, why_len, "messages[%d].content must be a string, null or an array of text parts", i);
        cJSON_Delete(c);
        return NULL;
    }
    return c;
}

char *lm_chat_render(const lm_chat_template *t, const cJSON *request, char *why, size_t why_len) {
    cJSON *ctx = cJSON_CreateObject(), *msgs = cJSON_AddArrayToObject(ctx, "messages");
    const cJSON *m, *in = cJSON_GetObjectItemCaseSensitive(request, "messages");
    int i = 0;
    cJSON_ArrayForEach(m, in) {
        cJSON *c = message_copy(m, i++, why, why_len);
        if (!c) {
            cJSON_Delete(ctx);
            return NULL;
        }
        cJSON_AddItemToArray(msgs, c);
    }
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(request, "tools");
    if (tools && !cJSON_IsNull(tools)) {
        if (!cJSON_IsArray(tools)) {
            snprintf(why, why_len, "'tools' must be an array");
            cJSON_Delete(ctx);
            return NULL;
        }
        cJSON_AddItemToObject(ctx, "tools", cJSON_Duplicate(tools, 1));
    }
    cJSON_AddBoolToObject(ctx, "add_generation_prompt", 1);
    cJSON_AddStringToObject(ctx, "bos_token", t->bos ? t->bos : "");
    cJSON_AddStringToObject(ctx, "eos_token", t->eos ? t->eos : "");
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(request, "chat_template_kwargs"), *e;
    if (cJSON_IsObject(kw))  // e.g. {"enable_thinking": false}
        cJSON_ArrayForEach(e, kw) {
            if (!strcmp(e->string, "messages")) continue;
            cJSON_DeleteItemFromObjectCaseSensitive(ctx, e->string);
            cJSON_AddItemToObject(ctx, e->string, cJSON_Duplicate(e, 1));
        }
    char *out = NULL;
    size_t len = 0;
    if (lm_tmpl_render(t->t, ctx, &out, &len)) {
        snprintf(why, why_len, "the chat template refused the conversation: %s", lm_last_error());
        out = NULL;
    }
    cJSON_Delete(ctx);
    return out;
}
