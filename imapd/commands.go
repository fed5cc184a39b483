package imapd

// state is the state a command needs (RFC 9051 §3).
type state int

const (
	anyState         state = iota
	notAuthenticated       // before login only
	authenticated          // after login, selected or not
	selectedState          // with a mailbox selected
)

// command is one entry of the command table.
type command struct {
	state state
	run   func(s *session, c *cmd) error
}

// commands maps command names to their handlers, one file per family:
// session.go and auth.go (connection, login), mailbox.go (mailboxes,
// LIST, STATUS), select.go, fetch.go, write.go (APPEND, STORE, COPY,
// MOVE, EXPUNGE), searchcmd.go, multisearch.go, idle.go, compress.go.
var commands map[string]command

func init() {
	commands = map[string]command{
		"CAPABILITY":   {anyState, (*session).cmdCapability},
		"NOOP":         {anyState, (*session).cmdNoop},
		"LOGOUT":       {anyState, (*session).cmdLogout},
		"ID":           {anyState, (*session).cmdID},
		"STARTTLS":     {notAuthenticated, (*session).cmdStartTLS},
		"LOGIN":        {notAuthenticated, (*session).cmdLogin},
		"AUTHENTICATE": {notAuthenticated, (*session).cmdAuthenticate},
		"ENABLE":       {authenticated, (*session).cmdEnable},
		"NAMESPACE":    {authenticated, (*session).cmdNamespace},
		"SELECT":       {authenticated, (*session).cmdSelect},
		"EXAMINE":      {authenticated, (*session).cmdSelect},
		"CREATE":       {authenticated, (*session).cmdCreate},
		"DELETE":       {authenticated, (*session).cmdDelete},
		"RENAME":       {authenticated, (*session).cmdRename},
		"SUBSCRIBE":    {authenticated, (*session).cmdSubscribe},
		"UNSUBSCRIBE":  {authenticated, (*session).cmdSubscribe},
		"LIST":         {authenticated, (*session).cmdList},
		"LSUB":         {authenticated, (*session).cmdList},
		"STATUS":       {authenticated, (*session).cmdStatus},
		"APPEND":       {authenticated, (*session).cmdAppend},
		"IDLE":         {authenticated, (*session).cmdIdle},
		"COMPRESS":     {authenticated, (*session).cmdCompress},
		"CHECK":        {selectedState, (*session).cmdNoop},
		"CLOSE":        {selectedState, (*session).cmdClose},
		"UNSELECT":     {selectedState, (*session).cmdClose},
		"EXPUNGE":      {selectedState, (*session).cmdExpunge},
		"SEARCH":       {selectedState, (*session).cmdSearch},
		"FETCH":        {selectedState, (*session).cmdFetch},
		"STORE":        {selectedState, (*session).cmdStore},
		"COPY":         {selectedState, (*session).cmdCopy},
		"MOVE":         {selectedState, (*session).cmdMove},
		"SORT":         {selectedState, (*session).cmdSort},   // sort.go
		"THREAD":       {selectedState, (*session).cmdThread}, // thread.go
		// quota.go, metadata.go
		"GETQUOTAROOT": {authenticated, (*session).cmdGetQuotaRoot},
		"GETQUOTA":     {authenticated, (*session).cmdGetQuota},
		"SETQUOTA":     {authenticated, (*session).cmdSetQuota},
		"GETMETADATA":  {authenticated, (*session).cmdGetMetadata},
		"SETMETADATA":  {authenticated, (*session).cmdSetMetadata},
		"UIDBATCHES":   {selectedState, (*session).cmdUIDBatches},
		// multisearch.go
		"ESEARCH": {authenticated, (*session).cmdESearch},
	}
}

// uidCommands may follow "UID".
var uidCommands = map[string]bool{"FETCH": true, "SEARCH": true, "STORE": true, "COPY": true, "MOVE": true, "EXPUNGE": true,
	"SORT": true, "THREAD": true}
