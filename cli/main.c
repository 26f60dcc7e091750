// lightmoe command-line tool: dispatches to one file per command group.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char *usage =
    "lightmoe — run Mixture-of-Experts language models from Hugging Face checkpoints\n"
    "\n"
    "usage: lightmoe COMMAND [options]     (lightmoe COMMAND --help for details)\n"
    "       lightmoe --version\n"
    "\n"
    "commands:\n"
    "  generate    generate text from a prompt or a JSONL file of prompts\n"
    "  logits      write the logits of a list of token ids (verification interface)\n"
    "  tokenize    print the token ids of a text\n"
    "  info        describe a checkpoint: architecture, parameters, memory\n"
    "  perplexity  score a text file: exp(mean negative log-likelihood), expert statistics\n"
    "  bench       measure prefill and decode throughput against the machine's rooflines\n"
    "  report      summarise expert routing counts (--expert-stats) and draw an SVG heat map\n"
    "  serve       an OpenAI-compatible HTTP server (completions, chat, streaming)\n"
    "\n"
    "Without -m every command uses the small model shipped in models/ (or $LIGHTMOE_MODEL).\n"
    "\n"
    "supported architectures: MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM,\n"
    "OlmoeForCausalLM (bf16, f16 or f32 safetensors, single file or sharded)\n";

static int dispatch(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("lightmoe %s\n", lm_version());
        return 0;
    }
    if (!strcmp(cmd, "generate")) return cmd_generate(argc - 1, argv + 1);
    if (!strcmp(cmd, "logits")) return cmd_logits(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "perplexity")) return cmd_perplexity(argc - 1, argv + 1);
    if (!strcmp(cmd, "serve")) return cmd_serve(argc - 1, argv + 1);
    if (!strcmp(cmd, "report")) return cmd_report(argc - 1, argv + 1);
    fprintf(stderr, "lightmoe: unknown command '%s'\n\n%s", cmd, usage);
    return EXIT_USAGE;
}

// With --mmap the weights are read from the checkpoint files in place: a file
// truncated by someone else meanwhile turns a read into SIGBUS. Say so
// instead of dying with "Bus error".
static void on_sigbus(int sig) {
    static const char msg[] = "lightmoe: a memory-mapped checkpoint file became shorter while it was in use "
                              "(modified or truncated during the run?)\n";
    if (write(2, msg, sizeof msg - 1)) {}
    (void)sig;
    _exit(1);
}

int main(int argc, char **argv) {
    // A closed standard descriptor would be reused by the next open(): an
    // output file would become "stderr" and receive the progress lines. Hold
    // the slot with /dev/null opened read-only, so that writing to a closed
    // stdout still fails (EBADF) and is reported instead of vanishing.
    for (int fd = 0; fd <= 2; fd++)
        if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDONLY) != fd) return 1;
    signal(SIGBUS, on_sigbus);
    int rc = dispatch(argc, argv);
    // Whatever a command printed must have reached its destination: a full
    // disk or /dev/full as standard output is an error, not a silent success.
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (rc == 0) fprintf(stderr, "lightmoe: writing standard output failed: %s\n", strerror(errno));
        return rc ? rc : 1;
    }
    return rc;
}
