package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// APIError is an error reported to clients in OpenAI's shape:
// {"error":{"message":…,"type":…,"param":…,"code":…}}.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Message is the human-readable description.
	Message string
	// Type is the error class, e.g. "invalid_request_error".
	Type string
	// Param names the offending request field, if any.
	Param string
	// Code is a machine-readable code, if any.
	Code string
}

// Error implements error.
func (e *APIError) Error() string {
	if e.Param != "" {
		return fmt.Sprintf("%d %s (%s): %s", e.Status, e.Type, e.Param, e.Message)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message)
}

// MarshalJSON encodes the error in OpenAI's envelope.
func (e *APIError) MarshalJSON() ([]byte, error) {
	type body struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	}
	b := body{Message: e.Message, Type: e.Type}
	if e.Param != "" {
		b.Param = &e.Param
	}
	if e.Code != "" {
		b.Code = &e.Code
	}
	return json.Marshal(struct {
		Error body `json:"error"`
	}{b})
}

// Error types used in responses.
const (
	typeInvalidRequest = "invalid_request_error"
	typeAuthentication = "authentication_error"
	typeRateLimit      = "rate_limit_error"
	typeServer         = "server_error"
	typeNotFound       = "not_found_error"
)

func badRequest(param, format string, args ...any) *APIError {
	return &APIError{Status: http.StatusBadRequest, Type: typeInvalidRequest, Param: param, Message: fmt.Sprintf(format, args...)}
}

func serverError(err error) *APIError {
	return &APIError{Status: http.StatusInternalServerError, Type: typeServer, Message: err.Error()}
}

// errQueueFull is returned by submit when the waiting queue is full.
var errQueueFull = &APIError{Status: http.StatusTooManyRequests, Type: typeRateLimit, Code: "rate_limit_exceeded",
	Message: "the server is at capacity (waiting queue full); retry later"}

// errShuttingDown is returned once the server stops accepting work.
var errShuttingDown = &APIError{Status: http.StatusServiceUnavailable, Type: typeServer, Code: "server_shutting_down",
	Message: "the server is shutting down"}

// asAPIError converts any error to an APIError (500 unless it already is one).
func asAPIError(err error) *APIError {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	return serverError(err)
}

// writeJSON writes v as a JSON response with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(serverError(fmt.Errorf("encode response: %w", err)))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
	w.Write([]byte("\n"))
}

// writeError writes err in OpenAI's error shape.
func writeError(w http.ResponseWriter, err error) {
	ae := asAPIError(err)
	writeJSON(w, ae.Status, ae)
}
