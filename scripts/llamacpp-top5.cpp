// Greedy decoding through llama.cpp's llama.h API, printing each step's top-5 logits in the
// format of fixtures/smollm2/llamacpp-greedy-*.txt. Built and run by llamacpp-logit-spread.sh.
//
// usage: llamacpp-top5 MODEL.gguf FLASH_ATTN(0|1) THREADS KV(f16|f32) STEPS ID [ID ...]
#include "llama.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

int main(int argc, char ** argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s MODEL FLASH_ATTN THREADS KV STEPS ID...\n", argv[0]);
        return 2;
    }
    const int fa = atoi(argv[2]), threads = atoi(argv[3]), steps = atoi(argv[5]);
    const bool kv32 = strcmp(argv[4], "f32") == 0;
    std::vector<llama_token> prompt;
    for (int i = 6; i < argc; i++) prompt.push_back(atoi(argv[i]));

    llama_backend_init();
    llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) return 1;
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512;
    cp.n_batch = 512;
    cp.n_threads = cp.n_threads_batch = threads;
    cp.flash_attn_type = fa ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    if (kv32) cp.type_k = cp.type_v = GGML_TYPE_F32;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) return 1;
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

    llama_token next = 0;
    llama_batch batch = llama_batch_get_one(prompt.data(), (int) prompt.size());
    std::vector<int> idx(n_vocab);
    for (int step = 0; step < steps; step++) {
        if (llama_decode(ctx, batch) != 0) return 1;
        const float * logits = llama_get_logits_ith(ctx, -1);
        for (int i = 0; i < n_vocab; i++) idx[i] = i;
        std::partial_sort(idx.begin(), idx.begin() + 5, idx.end(),
                          [&](int a, int b) { return logits[a] > logits[b]; });
        printf("step %2d id %6d logit %.4f top5:", step, idx[0], logits[idx[0]]);
        for (int i = 0; i < 5; i++) printf(" %d:%.4f", idx[i], logits[idx[i]]);
        printf("\n");
        next = idx[0];
        batch = llama_batch_get_one(&next, 1);
    }
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
