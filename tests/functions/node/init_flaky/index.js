// Its init fails until the epoch second in FAIL_UNTIL has passed, then it works.
if (Date.now() / 1000 < parseFloat(process.env.FAIL_UNTIL || '0')) {
  throw new Error('init not ready yet');
}

exports.handler = async () => ({ ready: true });
