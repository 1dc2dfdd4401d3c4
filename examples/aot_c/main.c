/* A C host for a tessera ahead-of-time artifact.
 *
 *   tessera compile examples/models/mlp.onnx -o build/mlp.so
 *   cc -O2 -I build -include mlp.h examples/aot_c/main.c build/mlp.so -Wl,-rpath,'$ORIGIN' -o build/mlp_host
 *   ./build/mlp_host
 *
 * The header (-include) gives the sizes and the entry point. Inputs are filled with
 * x[i] = sin(0.37 i + k) (k = input index) so a test can recompute them; every output
 * element is printed, one per line, as "out<j> <index> <value>".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    static const size_t in_bytes[] = {TESSERA_INPUT_0_BYTES};
    static const size_t out_bytes[] = {TESSERA_OUTPUT_0_BYTES};
    void *inputs[TESSERA_NUM_INPUTS];
    void *outputs[TESSERA_NUM_OUTPUTS];
    for (int k = 0; k < TESSERA_NUM_INPUTS; k++) {
        float *x = aligned_alloc(64, (in_bytes[k] + 63) / 64 * 64);
        for (size_t i = 0; i < in_bytes[k] / sizeof(float); i++) x[i] = sinf(0.37f * (float)i + (float)k);
        inputs[k] = x;
    }
    for (int j = 0; j < TESSERA_NUM_OUTPUTS; j++) outputs[j] = aligned_alloc(64, (out_bytes[j] + 63) / 64 * 64);
    void *workspace = aligned_alloc(64, TESSERA_WORKSPACE_BYTES > 0 ? (TESSERA_WORKSPACE_BYTES + 63) / 64 * 64 : 64);
    if (tessera_run(inputs, outputs, workspace) != 0) {
        fprintf(stderr, "tessera_run failed\n");
        return 1;
    }
    for (int j = 0; j < TESSERA_NUM_OUTPUTS; j++) {
        const float *y = outputs[j];
        for (size_t i = 0; i < out_bytes[j] / sizeof(float); i++) printf("out%d %zu %.9g\n", j, i, y[i]);
    }
    return 0;
}
