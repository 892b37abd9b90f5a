// Fails to load: the invoker must get Runtime.ImportModuleError.
require('nimbus-module-that-does-not-exist');

exports.handler = async () => 'unreachable';
