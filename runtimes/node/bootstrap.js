'use strict';
/**
 * Nimbus managed runtime for nodejs20.x: a Lambda Runtime API (2018-06-01) client.
 *
 * Started by the platform as `/usr/bin/node bootstrap.js` with cwd = LAMBDA_TASK_ROOT.
 *
 * Behaviour follows the AWS Node.js runtime interface client (aws-lambda-nodejs-
 * runtime-interface-client): handler loading and its errors, the context object,
 * callback / async / context.done semantics including callbackWaitsForEmptyEventLoop,
 * error bodies and the tab-separated console log lines.
 *
 * The Runtime API is spoken over one keep-alive connection on a raw `net` socket:
 * `http` + an Agent costs ~1 ms more to load and more per request, and we need
 * full control over the socket (ref/unref, see below).
 */

const net = require('net');
const fs = require('fs');
const path = require('path');
const util = require('util');

const API_PREFIX = '/2018-06-01/runtime';

// ---------------------------------------------------------------------------
// Logging: console.* -> `<ISO time>\t<request id>\t<LEVEL>\t<message>` on fd 1,
// written synchronously so it is in the pipe before the response is posted.
// Newlines inside a message become '\r' so one call stays one log line (as on AWS).
// ---------------------------------------------------------------------------
let currentRequestId; // undefined during init: AWS prints "undefined" there too
const sleepCell = new Int32Array(new SharedArrayBuffer(4));

function writeAllSync(fd, text) {
  const buf = Buffer.from(text, 'utf8');
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(fd, buf, off);
    } catch (e) {
      // fd 1 may be non-blocking if user code touched process.stdout; wait and retry.
      if (e.code === 'EAGAIN') Atomics.wait(sleepCell, 0, 0, 1);
      else return; // EPIPE etc.: nobody is reading, drop the line
    }
  }
}

function logLine(level, args) {
  const message = util.format(...args).replace(/\n/g, '\r');
  writeAllSync(1, `${new Date().toISOString()}\t${currentRequestId}\t${level}\t${message}\n`);
}

function patchConsole() {
  const priority = { TRACE: 1, DEBUG: 2, INFO: 3, WARN: 4, ERROR: 5, FATAL: 6 };
  const min = priority[(process.env.AWS_LAMBDA_LOG_LEVEL || '').toUpperCase()] || 1;
  const make = (level) =>
    priority[level] >= min ? (...args) => logLine(level, args) : () => {};
  console.trace = make('TRACE');
  console.debug = make('DEBUG');
  console.info = make('INFO');
  console.log = console.info;
  console.warn = make('WARN');
  console.error = make('ERROR');
  console.fatal = make('FATAL');
}

// ---------------------------------------------------------------------------
// Errors (RIC's Errors.js).
// ---------------------------------------------------------------------------
function runtimeError(name) {
  const cls = class extends Error {};
  cls.prototype.name = `Runtime.${name}`;
  return cls;
}
const ImportModuleError = runtimeError('ImportModuleError');
const HandlerNotFound = runtimeError('HandlerNotFound');
const MalformedHandlerName = runtimeError('MalformedHandlerName');
const UserCodeSyntaxError = runtimeError('UserCodeSyntaxError');
class UnhandledPromiseRejection extends runtimeError('UnhandledPromiseRejection') {
  constructor(reason, promise) {
    super(reason);
    this.reason = reason;
    this.promise = promise;
  }
}
class NodeJsExit extends runtimeError('NodeJsExit') {
  constructor() {
    super(
      'The Lambda runtime client detected an unexpected Node.js exit code. This is most commonly caused by a Promise that was never settled. For more information, see https://nodejs.org/docs/latest/api/process.html#exit-codes',
    );
  }
}

function isErrorLike(e) {
  return (
    util.types.isNativeError(e) ||
    (e && typeof e.name === 'string' && typeof e.message === 'string' && typeof e.stack === 'string')
  );
}

/** The body POSTed to /error and /init/error. */
function toRapidResponse(error) {
  try {
    if (isErrorLike(error)) {
      return {
        errorType: error.name,
        errorMessage: error.message,
        trace: error.stack.split('\n'),
      };
    }
    return { errorType: typeof error, errorMessage: String(error), trace: [] };
  } catch (_) {
    return {
      errorType: 'handled',
      errorMessage:
        'callback called with Error argument, but there was a problem while retrieving one or more of its message, name, and stack',
    };
  }
}

/** The JSON logged after "Invoke Error" etc.: includes enumerable props and the stack. */
function toFormatted(error) {
  const replacer = (_k, v) => {
    if (!(v instanceof Error)) return v;
    const out = Object.assign({ errorType: v.name, errorMessage: v.message, code: v.code }, v);
    if (typeof v.stack === 'string') out.stack = v.stack.split('\n');
    return out;
  };
  try {
    return '\t' + JSON.stringify(error, replacer);
  } catch (_) {
    return '\t' + JSON.stringify(toRapidResponse(error));
  }
}

function logError(label, error, fd) {
  const err = error instanceof Error ? error : new Error(error);
  const message = util.format(label, toFormatted(err)).replace(/\n/g, '\r');
  writeAllSync(fd, `${new Date().toISOString()}\t${currentRequestId}\tERROR\t${message}\n`);
}

// ---------------------------------------------------------------------------
// Runtime API client: one keep-alive HTTP/1.1 connection, one write per request.
// The socket is unref()'d while no request is outstanding so that the event loop
// can drain during an invoke ('beforeExit' drives callbackWaitsForEmptyEventLoop).
// ---------------------------------------------------------------------------
class RuntimeClient {
  constructor(address) {
    const i = address.lastIndexOf(':');
    this.host = address.slice(0, i).replace(/^\[|\]$/g, '');
    this.port = Number(address.slice(i + 1));
    this.hostHeader = address;
    this.socket = null;
    this.buf = null;
    this.pending = null; // { data, resolve, reject, attempt, gotBytes }
  }

  request(method, urlPath, body = '', headers = '') {
    const data =
      `${method} ${urlPath} HTTP/1.1\r\nHost: ${this.hostHeader}\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n${headers}\r\n${body}`;
    return new Promise((resolve, reject) => {
      this._send({ data, resolve, reject, attempt: 0, gotBytes: false });
    });
  }

  _send(p) {
    this.pending = p;
    if (!this.socket) this._connect();
    this.socket.ref();
    this.socket.write(p.data); // a single write (string -> utf8)
  }

  _connect() {
    // No timeouts anywhere: /next may block for as long as the platform likes.
    const socket = net.connect({ host: this.host, port: this.port, noDelay: true });
    socket.setNoDelay(true); // Nagle + delayed ACK would add ~40 ms per invoke
    socket.on('data', (chunk) => this._onData(socket, chunk));
    socket.on('error', () => {}); // followed by 'close'
    socket.on('close', () => this._onClose(socket));
    this.socket = socket;
    this.buf = null;
  }

  _onClose(socket) {
    if (socket !== this.socket) return;
    this.socket = null;
    this.buf = null;
    const p = this.pending;
    if (!p) return;
    this.pending = null;
    // Dead keep-alive connection or API not up yet: resend if nothing came back.
    if (!p.gotBytes && p.attempt < 20) {
      p.attempt++;
      setTimeout(() => this._send(p), p.attempt === 1 ? 0 : 5 * p.attempt);
    } else {
      p.reject(new Error('Runtime API connection lost'));
    }
  }

  _onData(socket, chunk) {
    this.buf = this.buf ? Buffer.concat([this.buf, chunk]) : chunk;
    const p = this.pending;
    if (!p) return; // unsolicited bytes; keep them for the parser
    p.gotBytes = true;
    const res = this._parse();
    if (!res) return;
    this.pending = null;
    if (res.close) {
      this.socket = null;
      socket.destroy();
    } else {
      socket.unref();
    }
    p.resolve(res);
  }

  /** Parse one complete response from this.buf, or return null if incomplete. */
  _parse() {
    const buf = this.buf;
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) return null;
    const lines = buf.toString('latin1', 0, end).split('\r\n');
    const status = Number(lines[0].split(' ')[1]);
    const headers = {};
    for (let i = 1; i < lines.length; i++) {
      const c = lines[i].indexOf(':');
      headers[lines[i].slice(0, c).trim().toLowerCase()] = lines[i].slice(c + 1).trim();
    }
    let body;
    let rest;
    if (/chunked/i.test(headers['transfer-encoding'] || '')) {
      const parts = [];
      let pos = end + 4;
      for (;;) {
        const eol = buf.indexOf('\r\n', pos);
        if (eol < 0) return null;
        const size = parseInt(buf.toString('latin1', pos, eol), 16);
        if (size === 0) {
          const fin = buf.indexOf('\r\n\r\n', eol - 2 < pos ? pos : eol - 2);
          if (fin < 0) return null;
          rest = buf.subarray(fin + 4);
          break;
        }
        if (buf.length < eol + 2 + size + 2) return null;
        parts.push(buf.subarray(eol + 2, eol + 2 + size));
        pos = eol + 2 + size + 2;
      }
      body = Buffer.concat(parts);
    } else {
      const length = Number(headers['content-length'] || 0);
      if (buf.length < end + 4 + length) return null;
      body = buf.subarray(end + 4, end + 4 + length);
      rest = buf.subarray(end + 4 + length);
    }
    this.buf = rest.length ? rest : null;
    return { status, headers, body, close: /close/i.test(headers.connection || '') };
  }

  async next() {
    const res = await this.request('GET', `${API_PREFIX}/invocation/next`);
    if (res.status !== 200) {
      // 403/500: the platform wants this runtime gone.
      writeAllSync(2, `Runtime API /next returned ${res.status}: ${res.body}\n`);
      process.exit(1);
    }
    return res;
  }

  async _post(urlPath, body, headers) {
    const res = await this.request('POST', urlPath, body, headers);
    if (res.status >= 500) {
      writeAllSync(2, `Runtime API ${urlPath} returned ${res.status}: ${res.body}\n`);
      process.exit(1);
    }
    if (res.status >= 300) {
      // e.g. 413: the platform turns it into an error for the caller; carry on.
      writeAllSync(2, `Runtime API ${urlPath} returned ${res.status}: ${res.body}\n`);
    }
  }

  postResponse(id, bodyString) {
    return this._post(
      `${API_PREFIX}/invocation/${encodeURIComponent(id)}/response`,
      bodyString,
      'Content-Type: application/json\r\n',
    );
  }

  postError(id, error) {
    return this._post(
      `${API_PREFIX}/invocation/${encodeURIComponent(id)}/error`,
      JSON.stringify(toRapidResponse(error)),
      'Content-Type: application/json\r\nLambda-Runtime-Function-Error-Type: Unhandled\r\n',
    );
  }

  postInitError(error) {
    const body = toRapidResponse(error);
    return this._post(
      `${API_PREFIX}/init/error`,
      JSON.stringify(body),
      // The type goes into a header: keep it to safe ASCII (err.name can be anything).
      `Content-Type: application/json\r\nLambda-Runtime-Function-Error-Type: ${String(
        body.errorType,
      ).replace(/[^A-Za-z0-9._-]/g, '_')}\r\n`,
    );
  }
}

// ---------------------------------------------------------------------------
// Handler loading (RIC's UserFunction.js).
// ---------------------------------------------------------------------------
function hasPackageJsonTypeModule(folder) {
  // Nearest package.json decides whether a .js file is ESM.
  for (;;) {
    if (folder.endsWith('/node_modules')) return false;
    const pj = path.join(folder, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        return JSON.parse(fs.readFileSync(pj, 'utf8')).type === 'module';
      } catch (_) {
        return false;
      }
    }
    if (folder === '/') return false;
    folder = path.resolve(folder, '..');
  }
}

async function importFile(file) {
  if (!fs.existsSync(file)) return undefined;
  const { pathToFileURL } = require('url');
  return import(pathToFileURL(file).href);
}

function requireFile(file) {
  return fs.existsSync(file) ? require(file) : undefined;
}

async function tryRequire(appRoot, moduleRoot, moduleName) {
  const base = path.resolve(appRoot, moduleRoot, moduleName);
  const extensionless = requireFile(base);
  if (extensionless) return extensionless;

  const jsIsModule = fs.existsSync(base + '.js') && hasPackageJsonTypeModule(path.dirname(base));
  if (!jsIsModule) {
    const loaded = requireFile(base + '.js');
    if (loaded) return loaded;
  }
  const loaded =
    (jsIsModule && (await importFile(base + '.js'))) ||
    (await importFile(base + '.mjs')) ||
    requireFile(base + '.cjs');
  if (loaded) return loaded;

  // Fall back to Node's own resolution (node_modules, directories); this also
  // produces the familiar "Cannot find module 'x'\nRequire stack: ..." error.
  return require(require.resolve(moduleName, { paths: [appRoot, moduleRoot] }));
}

async function loadHandler(appRoot, fullHandler) {
  if (fullHandler.includes('..')) {
    throw new MalformedHandlerName(
      `'${fullHandler}' is not a valid handler name. Use absolute paths when specifying root directories in handler names.`,
    );
  }
  // "dir/sub/index.nested.fn" -> moduleRoot "dir/sub/", module "index", path "nested.fn"
  const base = path.basename(fullHandler);
  const moduleRoot = fullHandler.substring(0, fullHandler.indexOf(base));
  const match = base.match(/^([^.]*)\.(.*)$/);
  if (!match) throw new MalformedHandlerName('Bad handler');
  const [, moduleName, handlerPath] = match;

  let app;
  try {
    app = await tryRequire(appRoot, moduleRoot, moduleName);
  } catch (e) {
    if (e instanceof SyntaxError) throw new UserCodeSyntaxError(e);
    if (e && e.code === 'MODULE_NOT_FOUND') throw new ImportModuleError(e);
    throw e;
  }
  const fn = handlerPath.split('.').reduce((o, key) => o && o[key], app);
  if (!fn) throw new HandlerNotFound(`${fullHandler} is undefined or not exported`);
  if (typeof fn !== 'function') throw new HandlerNotFound(`${fullHandler} is not a function`);
  return fn;
}

// ---------------------------------------------------------------------------
// Invoke loop (RIC's Runtime.js + CallbackContext.js + InvokeContext.js).
// ---------------------------------------------------------------------------
let beforeExitListener = () => {};
// What to do with an uncaught error: an init error until the first invoke starts.
let onFatalError;

function parseJsonHeader(value, name) {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(value);
  } catch (err) {
    throw new Error(`Cannot parse ${name} as json: ${err.toString()}`);
  }
}

function serialize(result) {
  try {
    return JSON.stringify(result === undefined ? null : result);
  } catch (_) {
    throw new Error('Unable to stringify response body');
  }
}

function startInvoke(client, handler, isAsync, res) {
  const headers = res.headers;
  const id = headers['lambda-runtime-aws-request-id'];
  currentRequestId = id;
  if (headers['lambda-runtime-trace-id']) process.env._X_AMZN_TRACE_ID = headers['lambda-runtime-trace-id'];
  else delete process.env._X_AMZN_TRACE_ID;

  const next = () => setImmediate(() => runLoop(client, handler, isAsync));
  const postError = (err) => {
    logError('Invoke Error', err, 1);
    client.postError(id, err).then(next, fatal);
  };
  let completed = false;
  const complete = (result) => {
    if (completed) return;
    completed = true;
    let body;
    try {
      body = serialize(result);
    } catch (err) {
      postError(err);
      return;
    }
    client.postResponse(id, body).then(next, fatal);
  };

  // Only the first of callback/done/succeed/fail counts.
  let finished = false;
  const once = (fn) => (...args) => {
    if (finished) return;
    finished = true;
    fn(...args);
  };
  let waitForEmptyEventLoop = true;
  const callback = once((err, result) => {
    beforeExitListener = () => {};
    if (err !== undefined && err !== null) postError(err);
    else if (!waitForEmptyEventLoop) complete(result);
    else beforeExitListener = () => setImmediate(() => complete(result));
  });
  const done = once((err, result) => {
    beforeExitListener = () => {};
    if (err !== undefined && err !== null) postError(err);
    else complete(result);
  });

  const deadline = Number(headers['lambda-runtime-deadline-ms']);
  const env = process.env;
  const context = {
    get callbackWaitsForEmptyEventLoop() {
      return waitForEmptyEventLoop;
    },
    set callbackWaitsForEmptyEventLoop(value) {
      waitForEmptyEventLoop = value;
    },
    succeed: (result) => done(null, result),
    fail: (err) => done(err === undefined || err === null ? 'handled' : err, null),
    done,
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: undefined,
    identity: undefined,
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
    awsRequestId: id,
    tenantId: headers['lambda-runtime-aws-tenant-id'],
    getRemainingTimeInMillis: () => deadline - Date.now(),
  };

  // An uncaught error now fails this invoke, then the process exits (as on AWS).
  onFatalError = (err, code) => {
    client.postError(id, err).then(() => process.exit(code), () => process.exit(code));
  };
  // If the event loop drains without a result: a plain/callback handler that
  // never called back succeeds with null; an async one never settled its promise.
  beforeExitListener = () => {
    finished = true;
    if (isAsync) {
      const err = new NodeJsExit();
      logError('Invoke Error', err, 1);
      client.postError(id, err).then(next, fatal);
    } else {
      complete(null);
    }
  };

  try {
    context.clientContext = parseJsonHeader(headers['lambda-runtime-client-context'], 'ClientContext');
    context.identity = parseJsonHeader(headers['lambda-runtime-cognito-identity'], 'CognitoIdentity');
    const event = res.body.length ? JSON.parse(res.body.toString('utf8')) : undefined;
    const result = handler(event, context, callback);
    if (result && typeof result.then === 'function') {
      result.then(context.succeed, context.fail).catch(context.fail);
    } else if (result !== undefined && handler.length < 3) {
      // Nimbus extension: a plain synchronous handler's return value is the
      // response (the AWS runtime ignores it and returns null).
      context.succeed(result);
    }
  } catch (err) {
    callback(err);
  }
}

function runLoop(client, handler, isAsync) {
  client.next().then((res) => startInvoke(client, handler, isAsync, res), fatal);
}

function fatal(err) {
  writeAllSync(2, `Nimbus runtime error: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
}

async function main() {
  patchConsole();
  const taskRoot = process.env.LAMBDA_TASK_ROOT || process.cwd();
  // Lambda's default module search path (layers, task root) when the platform sets none.
  if (process.env.NODE_PATH === undefined) {
    process.env.NODE_PATH = `/opt/nodejs/node20/node_modules:/opt/nodejs/node_modules:${taskRoot}`;
    const Module = require('module');
    if (typeof Module._initPaths === 'function') Module._initPaths();
  }

  const client = new RuntimeClient(process.env.AWS_LAMBDA_RUNTIME_API);
  onFatalError = (err, code) => {
    client.postInitError(err).then(() => process.exit(code), () => process.exit(code));
  };
  process.on('uncaughtException', (err) => {
    logError('Uncaught Exception', err, 1);
    onFatalError(err, 129);
  });
  process.on('unhandledRejection', (reason, promise) => {
    const err = new UnhandledPromiseRejection(reason, promise);
    logError('Unhandled Promise Rejection', err, 1);
    onFatalError(err, 128);
  });
  process.on('beforeExit', () => beforeExitListener());

  let handler;
  try {
    handler = await loadHandler(taskRoot, process.env._HANDLER || '');
  } catch (err) {
    // As AWS: logged as an uncaught exception, posted to /init/error, exit 129.
    logError('Uncaught Exception', err, 2);
    await client.postInitError(err).catch(() => {});
    process.exit(129);
  }
  const isAsync = handler.constructor && handler.constructor.name === 'AsyncFunction';
  runLoop(client, handler, isAsync);
}

main();
