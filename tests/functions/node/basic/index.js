// Test function for the end-to-end suite (runtime nodejs20.x, handler index.handler).
//
// The event chooses the behaviour, with the same protocol as the Python and Rust test functions:
//   {"echo": X}        -> X plus the context fields, the pid and an invocation counter
//   {"sleep_ms": N}    -> sleeps N ms
//   {"error": "msg"}   -> throws a TestError(msg)
//   {"exit": code}     -> process.exit(code) in the middle of the invocation
//   {"print": "line" or [lines], "stderr": "line"} -> writes the lines, returns them
//   {"env": true}      -> the process environment
//   {"spawn_sleep_ms": N} -> starts a child process, then sleeps N ms
// Other handlers: index.callback (callback style), index.callbackError, index.nested.handler,
// index.hello.
'use strict';

const { spawn } = require('child_process');

let count = 0;

class TestError extends Error {
  constructor(message) {
    super(message);
    this.name = 'TestError';
  }
}

function contextFields(context) {
  return {
    request_id: context.awsRequestId,
    function_name: context.functionName,
    function_version: context.functionVersion,
    memory_limit_in_mb: context.memoryLimitInMB,
    invoked_function_arn: context.invokedFunctionArn,
    log_group_name: context.logGroupName,
    log_stream_name: context.logStreamName,
    remaining_time_ms: context.getRemainingTimeInMillis(),
    client_context: context.clientContext === undefined ? null : context.clientContext,
  };
}

exports.handler = async (event, context) => {
  count += 1;
  if (event === null || typeof event !== 'object' || Array.isArray(event)) {
    return event;
  }
  if ('echo' in event) {
    return { echo: event.echo, ...contextFields(context), pid: process.pid, count };
  }
  if ('sleep_ms' in event) {
    await new Promise((resolve) => setTimeout(resolve, event.sleep_ms));
    return { slept_ms: event.sleep_ms, pid: process.pid, log_stream_name: context.logStreamName };
  }
  if ('error' in event) {
    throw new TestError(event.error);
  }
  if ('exit' in event) {
    process.exit(event.exit);
  }
  if ('print' in event || 'stderr' in event) {
    let lines = event.print === undefined ? [] : event.print;
    if (typeof lines === 'string') {
      lines = [lines];
    }
    for (const line of lines) {
      console.log(line);
    }
    if ('stderr' in event) {
      console.error(event.stderr);
    }
    return { printed: lines };
  }
  if ('env' in event) {
    return { ...process.env };
  }
  if ('spawn_sleep_ms' in event) {
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 300000)'], { stdio: 'ignore' });
    await new Promise((resolve) => setTimeout(resolve, event.spawn_sleep_ms));
    return { child_pid: child.pid, pid: process.pid };
  }
  return event;
};

// Callback-style handler: the result is given to the callback, not returned.
exports.callback = (event, context, callback) => {
  setTimeout(() => callback(null, { style: 'callback', input: event, request_id: context.awsRequestId }), 10);
};

exports.callbackError = (event, context, callback) => {
  callback(new TestError('callback failure'));
};

exports.nested = {
  handler: async (event) => ({ style: 'nested', input: event }),
};

exports.hello = async (event) => `Hello, ${(event && event.name) || 'world'}!`;
