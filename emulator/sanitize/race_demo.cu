// race_demo.cu: a kernel with a deliberately missing __syncthreads(), to show that the
// ThreadSanitizer build of the emulator reports it (scripts/emulator-sanitize.sh).
//
// Each thread writes its element into shared memory and then reads the mirrored element, which
// another thread wrote. Without the barrier the read races with that write.
extern "C" __global__ void reverse_through_shared(const float* in, float* out, int n) {
    __shared__ float tile[256];
    const int t = threadIdx.x;
    if (t < n) tile[t] = in[t];
#ifdef RACE_DEMO_FIXED
    __syncthreads();
#endif
    if (t < n) out[t] = tile[n - 1 - t];
}

int main() {
    const int n = 64;
    float in[n], out[n];
    for (int i = 0; i < n; ++i) in[i] = (float)i;
    const float* in_ptr = in;
    float* out_ptr = out;
    int count = n;
    void* args[] = {&in_ptr, &out_ptr, &count};
    char error[256] = {0};
    if (emu::launch(&emu::thunk<&reverse_through_shared>, dim3(1), dim3(n), 0, args, error, sizeof error) != 0) {
        std::fprintf(stderr, "launch failed: %s\n", error);
        return 2;
    }
    int wrong = 0;
    for (int i = 0; i < n; ++i) wrong += out[i] != (float)(n - 1 - i);
    std::printf("reverse_through_shared: %d of %d elements wrong\n", wrong, n);
    return 0;
}
