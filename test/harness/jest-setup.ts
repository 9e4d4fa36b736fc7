// Runs in every test file: the SDK must never reach a real AWS endpoint from a test.
if (
  !process.env.AWS_ENDPOINT_URL?.startsWith("http://127.0.0.1") &&
  !process.env.AWS_ENDPOINT_URL?.startsWith("http://localhost")
) {
  throw new Error(
    "tests must run with AWS_ENDPOINT_URL pointing at the local emulator (jest global setup sets it)",
  );
}
