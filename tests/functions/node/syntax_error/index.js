// Has a syntax error: the invoker must get Runtime.UserCodeSyntaxError.
exports.handler = async (event => {
  return 'unreachable';
;
