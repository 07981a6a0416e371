// Tree-walking interpreter of chat templates; semantics in jinja_eval.h.
#include "core/chat/jinja_eval.h"

#include <cmath>
#include <unordered_map>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"

namespace tessera::chat::jinja {
namespace {

constexpr int kMaxMacroDepth = 64;
constexpr char kLocatedPayload[] = "tessera.chat/located";

// Adds "line N: " to an error once (raise_exception's message is marked located from the start).
absl::Status AtLine(absl::Status st, int line) {
  if (st.ok() || st.GetPayload(kLocatedPayload).has_value()) return st;
  absl::Status out(st.code(), absl::StrCat("line ", line, ": ", st.message()));
  out.SetPayload(kLocatedPayload, absl::Cord("1"));
  return out;
}

absl::Status Err(const std::string& msg) { return absl::InvalidArgumentError(std::string(msg)); }

absl::Status UndefinedError(const Value& v) { return Err(v.s.empty() ? "value is undefined" : v.s); }

struct Scope {
  Scope* parent = nullptr;
  std::unordered_map<std::string, Value> vars;

  const Value* Find(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent) {
      auto it = s->vars.find(name);
      if (it != s->vars.end()) return &it->second;
    }
    return nullptr;
  }
};

absl::Status Unpack(const std::vector<std::string>& targets, const Value& v, Scope& scope) {
  if (targets.size() == 1) {
    scope.vars[targets[0]] = v;
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(List items, Iterate(v));
  if (items.size() != targets.size()) {
    return Err(absl::StrCat(items.size() < targets.size() ? "not enough" : "too many", " values to unpack (expected ",
                            targets.size(), ", got ", items.size(), ")"));
  }
  for (size_t k = 0; k < targets.size(); ++k) scope.vars[targets[k]] = items[k];
  return absl::OkStatus();
}

absl::StatusOr<Value> Arith(const std::string& op, const Value& l, const Value& r) {
  if (l.is_undefined()) return UndefinedError(l);
  if (r.is_undefined()) return UndefinedError(r);
  auto unsupported = [&]() {
    return Err(absl::StrCat("unsupported operand type(s) for ", op, ": '", TypeName(l), "' and '", TypeName(r), "'"));
  };
  // Python ints are unbounded; past int64 we refuse rather than wrap.
  int64_t iv = 0;
  auto CheckedInt = [&](bool overflow) -> absl::StatusOr<Value> {  // reads iv after the builtin wrote it
    if (overflow) return Err(absl::StrCat("integer overflow in ", op, " (beyond 64 bits)"));
    return Value::Int(iv);
  };
  bool nums = l.is_number() && r.is_number();
  bool ints = nums && l.kind != Kind::kFloat && r.kind != Kind::kFloat;
  if (op == "+") {
    if (ints) return CheckedInt(__builtin_add_overflow(l.AsInt(), r.AsInt(), &iv));
    if (nums) return Value::Float(l.AsDouble() + r.AsDouble());
    if (l.is_string() && r.is_string()) {
      if (l.markup || r.markup) {  // Markup.__add__/__radd__ escape the plain side
        Value out = Value::Str((l.markup ? l.s : HtmlEscape(l.s)) + (r.markup ? r.s : HtmlEscape(r.s)));
        out.markup = true;
        return out;
      }
      if (l.s.size() + r.s.size() > kMaxStringBytes) return absl::ResourceExhaustedError("string too long");
      return Value::Str(l.s + r.s);
    }
    if (l.is_list() && r.is_list() && l.flavor == r.flavor &&
        (l.flavor == Value::Flavor::kList || l.flavor == Value::Flavor::kTuple)) {
      List out = *l.list;
      out.insert(out.end(), r.list->begin(), r.list->end());
      return Value::MakeList(std::move(out), l.flavor);
    }
    if (l.is_string() || (l.is_list() && l.flavor == Value::Flavor::kList)) {
      std::string t = l.is_string() ? "str" : "list";
      return Err(absl::StrCat("can only concatenate ", t, " (not \"", TypeName(r), "\") to ", t));
    }
    return unsupported();
  }
  if (op == "-") {
    if (ints) return CheckedInt(__builtin_sub_overflow(l.AsInt(), r.AsInt(), &iv));
    if (nums) return Value::Float(l.AsDouble() - r.AsDouble());
    return unsupported();
  }
  if (op == "*") {
    if (ints) return CheckedInt(__builtin_mul_overflow(l.AsInt(), r.AsInt(), &iv));
    if (nums) return Value::Float(l.AsDouble() * r.AsDouble());
    const Value* seq = l.is_string() || l.is_list() ? &l : &r;
    const Value* cnt = seq == &l ? &r : &l;
    if ((seq->is_string() || (seq->is_list() && (seq->flavor == Value::Flavor::kList || seq->flavor == Value::Flavor::kTuple))) &&
        (cnt->kind == Kind::kInt || cnt->kind == Kind::kBool)) {
      int64_t n = std::max<int64_t>(cnt->AsInt(), 0);
      if (seq->is_string()) {
        RETURN_IF_ERROR(seq->markup ? Err("repeating a |safe string is not supported") : absl::OkStatus());
        if (static_cast<double>(seq->s.size()) * n > kMaxStringBytes) return absl::ResourceExhaustedError("string too long");
        std::string out;
        for (int64_t k = 0; k < n; ++k) out += seq->s;
        return Value::Str(std::move(out));
      }
      if (static_cast<double>(seq->list->size()) * n > 1e6) return absl::ResourceExhaustedError("list too long");
      List out;
      for (int64_t k = 0; k < n; ++k) out.insert(out.end(), seq->list->begin(), seq->list->end());
      return Value::MakeList(std::move(out), seq->flavor);
    }
    return unsupported();
  }
  if (op == "/") {
    if (!nums) return unsupported();
    if (r.AsDouble() == 0) return Err("division by zero");
    return Value::Float(l.AsDouble() / r.AsDouble());
  }
  if (op == "//") {
    if (!nums) return unsupported();
    if (r.AsDouble() == 0) return Err("integer division or modulo by zero");
    if (ints) {
      int64_t a = l.AsInt(), b = r.AsInt();
      int64_t q = a / b;
      if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
      return Value::Int(q);
    }
    return Value::Float(std::floor(l.AsDouble() / r.AsDouble()));
  }
  if (op == "%") {
    if (l.is_string()) {
      if (l.markup) return Err("% formatting of a |safe string is not supported");
      ASSIGN_OR_RETURN(std::string s, PercentFormat(l.s, r));
      return Value::Str(std::move(s));
    }
    if (!nums) return unsupported();
    if (r.AsDouble() == 0) return Err("integer division or modulo by zero");
    if (ints) {
      int64_t a = l.AsInt(), b = r.AsInt();
      int64_t m = a % b;
      if (m != 0 && ((m < 0) != (b < 0))) m += b;
      return Value::Int(m);
    }
    double a = l.AsDouble(), b = r.AsDouble();
    double m = std::fmod(a, b);
    if (m != 0 && ((m < 0) != (b < 0))) m += b;
    return Value::Float(m);
  }
  if (op == "**") {
    if (!nums) return unsupported();
    if (ints && r.AsInt() >= 0) {
      int64_t out = 1, base = l.AsInt();
      for (int64_t k = 0; k < r.AsInt(); ++k) {
        if (__builtin_mul_overflow(out, base, &out)) return CheckedInt(true);
      }
      return Value::Int(out);
    }
    return Value::Float(std::pow(l.AsDouble(), r.AsDouble()));
  }
  return Err(absl::StrCat("unknown operator ", op));
}

absl::StatusOr<bool> CompareOp(const std::string& op, const Value& a, const Value& b) {
  if (op == "==") return Equal(a, b);
  if (op == "!=") return !Equal(a, b);
  if (op == "in") return Contains(b, a);
  if (op == "notin") {
    ASSIGN_OR_RETURN(bool in, Contains(b, a));
    return !in;
  }
  if (op == "<") return Less(a, b);
  if (op == ">") return Less(b, a);
  if (op == "<=") {
    ASSIGN_OR_RETURN(bool gt, Less(b, a));
    return !gt;
  }
  if (op == ">=") {
    ASSIGN_OR_RETURN(bool lt, Less(a, b));
    return !lt;
  }
  return Err(absl::StrCat("unknown comparison ", op));
}

class Interpreter {
 public:
  explicit Interpreter(const BuiltinEnv& env) : env_(env) {}

  absl::Status Run(const Program& p, const std::vector<std::pair<std::string, Value>>& variables, std::string& out) {
    for (const char* g : {"range", "namespace", "dict", "raise_exception", "strftime_now"}) {
      root_.vars[g] = MakeGlobal(g, env_);
    }
    for (const auto& [k, v] : variables) root_.vars[k] = v;
    return Exec(p.body, root_, out);
  }

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  absl::Status Append(std::string& out, std::string_view s) {
    if (out.size() + s.size() > kMaxStringBytes) {
      return absl::ResourceExhaustedError("rendered chat template exceeds 64 MiB");
    }
    out += s;
    return absl::OkStatus();
  }

  absl::Status Exec(const Body& body, Scope& scope, std::string& out) {
    for (const auto& st : body) {
      RETURN_IF_ERROR(AtLine(ExecOne(*st, scope, out), st->line));
      if (flow_ != Flow::kNormal) return absl::OkStatus();
    }
    return absl::OkStatus();
  }

  absl::Status ExecOne(const Stmt& s, Scope& scope, std::string& out) {
    switch (s.kind) {
      case StmtKind::kText: return Append(out, s.text);
      case StmtKind::kOutput: {
        ASSIGN_OR_RETURN(Value v, Eval(*s.expr, scope));
        ASSIGN_OR_RETURN(std::string text, ToStr(v));
        return Append(out, text);
      }
      case StmtKind::kIf: {
        for (const auto& [cond, body] : s.branches) {
          ASSIGN_OR_RETURN(Value c, Eval(*cond, scope));
          if (Truthy(c)) return Exec(body, scope, out);
        }
        return Exec(s.else_body, scope, out);
      }
      case StmtKind::kFor: return ExecFor(s, scope, out);
      case StmtKind::kSet: {
        ASSIGN_OR_RETURN(Value v, Eval(*s.expr, scope));
        if (!s.attr.empty()) {
          const Value* ns = scope.Find(s.targets[0]);
          if (ns == nullptr || ns->kind != Kind::kNamespace) {
            return Err(absl::StrCat("cannot assign attribute on non-namespace object ('", s.targets[0], ".", s.attr, "')"));
          }
          if (s.attr[0] == '_') {
            return Err(absl::StrCat("Chat templates cannot store underscore-prefixed attributes on a namespace, but got '", s.attr, "'. Please rename the attribute."));
          }
          ns->dict->Set(Value::Str(s.attr), std::move(v));
          return absl::OkStatus();
        }
        return Unpack(s.targets, v, scope);
      }
      case StmtKind::kSetBlock: {
        std::string captured;
        RETURN_IF_ERROR(Exec(s.body, scope, captured));
        scope.vars[s.targets[0]] = Value::Str(std::move(captured));
        return absl::OkStatus();
      }
      case StmtKind::kMacro: {
        const Stmt* macro = &s;
        scope.vars[s.name] = Value::MakeCallable(absl::StrCat("macro '", s.name, "'"),
                                                 [this, macro](CallArgs& a) { return CallMacro(*macro, a); });
        return absl::OkStatus();
      }
      case StmtKind::kBreak: flow_ = Flow::kBreak; return absl::OkStatus();
      case StmtKind::kContinue: flow_ = Flow::kContinue; return absl::OkStatus();
      case StmtKind::kGeneration: return Exec(s.body, scope, out);
      case StmtKind::kCallBlock: {
        const Expr& call = *s.expr;
        ASSIGN_OR_RETURN(Value callee, Eval(*call.children[0], scope));
        if (callee.kind != Kind::kCallable || callee.fn->name.rfind("macro ", 0) != 0) {
          return Err("{% call %} must call a macro of this template");
        }
        ASSIGN_OR_RETURN(CallArgs a, EvalArgs(call, 1, scope));
        const Stmt* block = &s;
        Scope* site = &scope;
        // caller() renders in the call site's scope, which ends with this statement; a caller kept
        // beyond it (stored in a namespace) is refused instead of reading a dead scope.
        auto alive = std::make_shared<bool>(true);
        a.kwargs.emplace_back("caller", Value::MakeCallable("caller", [this, block, site, alive](CallArgs& ca)
                                                                          -> absl::StatusOr<Value> {
          if (!*alive) return Err("caller() used after its {% call %} block ended");
          return RunBody(block->body, block->params, block->defaults, "caller", ca, site);
        }));
        absl::StatusOr<Value> called = callee.fn->fn(a);
        *alive = false;
        ASSIGN_OR_RETURN(Value v, std::move(called));
        ASSIGN_OR_RETURN(std::string text, ToStr(v));
        return Append(out, text);
      }
    }
    return absl::OkStatus();
  }

  absl::Status ExecFor(const Stmt& s, Scope& scope, std::string& out) {
    ASSIGN_OR_RETURN(Value seq, Eval(*s.expr, scope));
    if (seq.kind == Kind::kNone || (!seq.is_undefined() && !seq.is_list() && !seq.is_dict() && !seq.is_string())) {
      return Err(absl::StrCat("'", TypeName(seq), "' object is not iterable"));
    }
    ASSIGN_OR_RETURN(List items, Iterate(seq));
    if (s.filter) {
      List kept;
      for (const Value& item : items) {
        Scope probe;
        probe.parent = &scope;
        RETURN_IF_ERROR(Unpack(s.targets, item, probe));
        ASSIGN_OR_RETURN(Value c, Eval(*s.filter, probe));
        if (Truthy(c)) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) return Exec(s.else_body, scope, out);
    auto shared = std::make_shared<const List>(std::move(items));
    for (size_t k = 0; k < shared->size(); ++k) {
      Scope iter;
      iter.parent = &scope;
      RETURN_IF_ERROR(Unpack(s.targets, (*shared)[k], iter));
      auto state = std::make_shared<LoopState>();
      state->items = shared;
      state->index0 = static_cast<int64_t>(k);
      Value loop;
      loop.kind = Kind::kLoop;
      loop.loop = std::move(state);
      iter.vars["loop"] = std::move(loop);
      RETURN_IF_ERROR(Exec(s.body, iter, out));
      if (flow_ == Flow::kBreak) {
        flow_ = Flow::kNormal;
        break;
      }
      flow_ = Flow::kNormal;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Value> CallMacro(const Stmt& m, CallArgs& a) {
    std::vector<std::string> params = m.params;
    std::vector<const Expr*> defaults;
    for (const auto& d : m.defaults) defaults.push_back(d.get());
    // jinja2 gives a macro that references `caller` an implicit caller parameter (Undefined unless the
    // macro is invoked from {% call %}); other macros refuse one.
    if (m.uses_caller) {
      params.push_back("caller");
      defaults.push_back(nullptr);
    }
    return RunBody(m.body, params, defaults, absl::StrCat("macro '", m.name, "'"), a, &root_);
  }

  absl::StatusOr<Value> RunBody(const Body& body, const std::vector<std::string>& params,
                                const std::vector<ExprPtr>& defaults, const std::string& what, CallArgs& a,
                                Scope* parent) {
    std::vector<const Expr*> d;
    for (const auto& e : defaults) d.push_back(e.get());
    return RunBody(body, params, d, what, a, parent);
  }

  // Binds arguments to params (positional, keyword, defaults evaluated in the new scope, else
  // Undefined) and renders body in a scope over `parent`; the rendered text is the value.
  absl::StatusOr<Value> RunBody(const Body& body, const std::vector<std::string>& params,
                                const std::vector<const Expr*>& defaults, const std::string& what, CallArgs& a,
                                Scope* parent) {
    if (depth_ >= kMaxMacroDepth) return absl::ResourceExhaustedError("macro recursion too deep");
    if (a.args.size() > params.size()) {
      return Err(absl::StrCat(what, " takes not more than ", params.size(), " argument(s)"));
    }
    Scope s;
    s.parent = parent;
    std::vector<bool> given(params.size(), false);
    for (size_t k = 0; k < a.args.size(); ++k) {
      s.vars[params[k]] = a.args[k];
      given[k] = true;
    }
    for (const auto& [key, v] : a.kwargs) {
      auto it = std::find(params.begin(), params.end(), key);
      if (it == params.end() && key == "caller") {
        return Err(absl::StrCat(what, " was invoked with two values for the special caller argument. This is most likely a bug."));
      }
      if (it == params.end()) return Err(absl::StrCat(what, " takes no keyword argument '", key, "'"));
      size_t idx = it - params.begin();
      if (given[idx]) return Err(absl::StrCat(what, " got multiple values for argument '", key, "'"));
      s.vars[key] = v;
      given[idx] = true;
    }
    ++depth_;
    for (size_t k = 0; k < params.size(); ++k) {
      if (given[k]) continue;
      if (defaults[k]) {
        absl::StatusOr<Value> dv = Eval(*defaults[k], s);
        if (!dv.ok()) {
          --depth_;
          return dv.status();
        }
        s.vars[params[k]] = *std::move(dv);
      } else {
        Value u;
        u.s = params[k] == "caller" && what != "caller" ? "No caller defined"
                                                          : absl::StrCat("parameter '", params[k], "' was not provided");
        s.vars[params[k]] = std::move(u);
      }
    }
    std::string out;
    absl::Status st = Exec(body, s, out);
    flow_ = Flow::kNormal;
    --depth_;
    RETURN_IF_ERROR(st);
    return Value::Str(std::move(out));
  }

  absl::StatusOr<CallArgs> EvalArgs(const Expr& e, size_t first, Scope& scope) {
    CallArgs a;
    a.line = e.line;
    for (size_t k = first; k < e.children.size(); ++k) {
      ASSIGN_OR_RETURN(Value v, Eval(*e.children[k], scope));
      a.args.push_back(std::move(v));
    }
    for (const auto& [key, ex] : e.kwargs) {
      ASSIGN_OR_RETURN(Value v, Eval(*ex, scope));
      a.kwargs.emplace_back(key, std::move(v));
    }
    if (e.star_args) {
      ASSIGN_OR_RETURN(Value v, Eval(*e.star_args, scope));
      if (!v.is_list() && !v.is_string() && !v.is_dict()) {
        return Err(absl::StrCat("argument after * must be an iterable, not ", TypeName(v)));
      }
      ASSIGN_OR_RETURN(List items, Iterate(v));
      for (Value& item : items) a.args.push_back(std::move(item));
    }
    if (e.star_kwargs) {
      ASSIGN_OR_RETURN(Value v, Eval(*e.star_kwargs, scope));
      if (!v.is_dict()) return Err(absl::StrCat("argument after ** must be a mapping, not ", TypeName(v)));
      for (const auto& [k, val] : v.dict->items) {
        if (!k.is_string()) return Err("keywords must be strings");
        for (const auto& kw : a.kwargs) {
          if (kw.first == k.s) return Err(absl::StrCat("got multiple values for keyword argument '", k.s, "'"));
        }
        a.kwargs.emplace_back(k.s, val);
      }
    }
    return a;
  }

  absl::StatusOr<Value> Eval(const Expr& e, Scope& scope) {
    absl::StatusOr<Value> v = EvalInner(e, scope);
    if (!v.ok()) return AtLine(v.status(), e.line);
    return v;
  }

  absl::StatusOr<Value> EvalInner(const Expr& e, Scope& scope) {
    switch (e.kind) {
      case ExprKind::kLiteral: return e.literal;
      case ExprKind::kName: {
        const Value* v = scope.Find(e.name);
        if (v) return *v;
        Value u;
        u.s = absl::StrCat("'", e.name, "' is undefined");
        return u;
      }
      case ExprKind::kList:
      case ExprKind::kTuple: {
        List items;
        for (const auto& c : e.children) {
          ASSIGN_OR_RETURN(Value v, Eval(*c, scope));
          items.push_back(std::move(v));
        }
        return Value::MakeList(std::move(items), e.kind == ExprKind::kTuple ? Value::Flavor::kTuple : Value::Flavor::kList);
      }
      case ExprKind::kDict: {
        auto d = std::make_shared<Dict>();
        for (size_t k = 0; k + 1 < e.children.size(); k += 2) {
          ASSIGN_OR_RETURN(Value key, Eval(*e.children[k], scope));
          ASSIGN_OR_RETURN(Value val, Eval(*e.children[k + 1], scope));
          if (key.kind == Kind::kDict || (key.is_list() && !key.tuple()) || key.kind == Kind::kNamespace) {
            return Err(absl::StrCat("unhashable type: '", TypeName(key), "'"));
          }
          d->Set(std::move(key), std::move(val));
        }
        return Value::MakeDict(std::move(d));
      }
      case ExprKind::kAttr: {
        ASSIGN_OR_RETURN(Value obj, Eval(*e.children[0], scope));
        return GetAttr(obj, e.name);
      }
      case ExprKind::kItem: {
        ASSIGN_OR_RETURN(Value obj, Eval(*e.children[0], scope));
        ASSIGN_OR_RETURN(Value key, Eval(*e.children[1], scope));
        return GetItem(obj, key);
      }
      case ExprKind::kSlice: {
        ASSIGN_OR_RETURN(Value obj, Eval(*e.children[0], scope));
        Value parts[3];
        for (int k = 0; k < 3; ++k) {
          if (e.children[k + 1]) {
            ASSIGN_OR_RETURN(parts[k], Eval(*e.children[k + 1], scope));
          }
        }
        return Slice(obj, parts[0], parts[1], parts[2]);
      }
      case ExprKind::kCall: {
        ASSIGN_OR_RETURN(Value callee, Eval(*e.children[0], scope));
        if (callee.kind != Kind::kCallable) {
          if (callee.is_undefined()) return UndefinedError(callee);
          return Err(absl::StrCat("'", TypeName(callee), "' object is not callable"));
        }
        ASSIGN_OR_RETURN(CallArgs a, EvalArgs(e, 1, scope));
        absl::StatusOr<Value> r = callee.fn->fn(a);
        if (!r.ok() && callee.fn->name == "raise_exception") {
          absl::Status st = r.status();
          st.SetPayload(kLocatedPayload, absl::Cord("verbatim"));
          return st;
        }
        return r;
      }
      case ExprKind::kFilter: {
        ASSIGN_OR_RETURN(Value operand, Eval(*e.children[0], scope));
        ASSIGN_OR_RETURN(CallArgs a, EvalArgs(e, 1, scope));
        return ApplyFilter(e.name, operand, a);
      }
      case ExprKind::kTest: {
        ASSIGN_OR_RETURN(Value operand, Eval(*e.children[0], scope));
        ASSIGN_OR_RETURN(CallArgs a, EvalArgs(e, 1, scope));
        ASSIGN_OR_RETURN(bool r, ApplyTest(e.name, operand, a));
        return Value::Bool(r != e.negated);
      }
      case ExprKind::kUnary: {
        ASSIGN_OR_RETURN(Value v, Eval(*e.children[0], scope));
        if (e.name == "not") return Value::Bool(!Truthy(v));
        if (v.is_undefined()) return UndefinedError(v);
        if (!v.is_number()) return Err(absl::StrCat("bad operand type for unary ", e.name, ": '", TypeName(v), "'"));
        if (e.name == "+") return v.kind == Kind::kFloat ? v : Value::Int(v.AsInt());
        return v.kind == Kind::kFloat ? Value::Float(-v.f) : Value::Int(-v.AsInt());
      }
      case ExprKind::kBinary: {
        ASSIGN_OR_RETURN(Value l, Eval(*e.children[0], scope));
        if (e.name == "and") {
          if (!Truthy(l)) return l;
          return Eval(*e.children[1], scope);
        }
        if (e.name == "or") {
          if (Truthy(l)) return l;
          return Eval(*e.children[1], scope);
        }
        ASSIGN_OR_RETURN(Value r, Eval(*e.children[1], scope));
        if (e.name == "~") {
          ASSIGN_OR_RETURN(std::string ls, ToStr(l));
          ASSIGN_OR_RETURN(std::string rs, ToStr(r));
          if (ls.size() + rs.size() > kMaxStringBytes) return absl::ResourceExhaustedError("string too long");
          return Value::Str(ls + rs);
        }
        return Arith(e.name, l, r);
      }
      case ExprKind::kCompare: {
        ASSIGN_OR_RETURN(Value left, Eval(*e.children[0], scope));
        for (size_t k = 0; k < e.ops.size(); ++k) {
          ASSIGN_OR_RETURN(Value right, Eval(*e.children[k + 1], scope));
          ASSIGN_OR_RETURN(bool ok, CompareOp(e.ops[k], left, right));
          if (!ok) return Value::Bool(false);
          left = std::move(right);
        }
        return Value::Bool(true);
      }
      case ExprKind::kCond: {
        ASSIGN_OR_RETURN(Value c, Eval(*e.children[1], scope));
        if (Truthy(c)) return Eval(*e.children[0], scope);
        if (e.children[2]) return Eval(*e.children[2], scope);
        Value u;
        u.s = absl::StrCat("the inline if-expression on line ", e.line, " evaluated to false and no else section was defined.");
        return u;
      }
    }
    return Err("unknown expression");
  }

  const BuiltinEnv& env_;
  Scope root_;
  Flow flow_ = Flow::kNormal;
  int depth_ = 0;
};

}  // namespace

absl::StatusOr<std::string> RenderProgram(const Program& program,
                                          const std::vector<std::pair<std::string, Value>>& variables,
                                          const BuiltinEnv& env) {
  Interpreter interp(env);
  std::string out;
  absl::Status st = interp.Run(program, variables, out);
  if (!st.ok()) {
    // Drop the internal payload: callers see the code and message only.
    return absl::Status(st.code(), st.message());
  }
  return out;
}

}  // namespace tessera::chat::jinja
