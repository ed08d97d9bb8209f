// Prints one plain closing line, "tests: N passed, N failed, N skipped", so any CI can
// read the outcome of the run without knowing jest's own summary format.
export default class SummaryReporter {
  onRunComplete(_contexts, results) {
    const skipped = results.numPendingTests + results.numTodoTests;
    console.log(
      `\ntests: ${results.numPassedTests} passed, ${results.numFailedTests} failed, ${skipped} skipped`,
    );
  }
}
