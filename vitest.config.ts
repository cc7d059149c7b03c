import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Integration tests share one registry and unpack as root; files run in parallel
    // but each test inside a file runs in order.
    fileParallelism: true,
    reporters: ['default'],
  },
});
