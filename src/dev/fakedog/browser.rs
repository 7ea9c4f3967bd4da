//! A tiny scripted browser for tests and the demo: a reqwest client that
//! trusts only fakedog's CA, resolves every Datadog host (custom subdomains
//! included) to fakedog and a few extra hosts (e.g. `relay.test`) to given
//! addresses, follows redirects, and can click through the consent page.
//!
//! It never resolves any other name, so a test that uses it cannot reach
//! the real Datadog or anything else on the network by mistake.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::site::Site;
use crate::text::html_unescape as unescape;

/// How many consent pages one walk clicks through at most (the region
/// picker can show one on US1 and one on the org's own site).
const MAX_CONSENTS: usize = 4;

/// Why the browser failed.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error("cannot build the browser: {0}")]
    Build(String),
    #[error("request to {url} failed: {message}")]
    Request { url: String, message: String },
    #[error("still on a consent page after {0} submissions")]
    TooManyConsents(usize),
    #[error("the consent page offers no organization named {wanted:?} (it offers: {offered})")]
    NoSuchOrg { wanted: String, offered: String },
}

/// The page a navigation ended on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: u16,
    /// The final URL, after redirects.
    pub url: String,
    pub body: String,
}

impl Page {
    /// True when this is fakedog's consent page.
    pub(crate) fn is_consent(&self) -> bool {
        self.body.contains("name=\"consent_id\"")
    }

    /// A query parameter of the final URL (e.g. `code` on a callback).
    pub fn query_param(&self, name: &str) -> Option<String> {
        let url = url::Url::parse(&self.url).ok()?;
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// What to click on a consent page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Authorize,
    Deny,
}

struct Hosts {
    fakedog: SocketAddr,
    extra: Vec<(String, SocketAddr)>,
}

impl Resolve for Hosts {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        let addr = self
            .extra
            .iter()
            .find(|(h, _)| *h == host)
            .map(|(_, a)| *a)
            .or_else(|| Site::classify_host(&host).map(|_| self.fakedog));
        Box::pin(async move {
            match addr {
                Some(a) => Ok(Box::new(std::iter::once(a)) as Addrs),
                None => Err(format!(
                    "the fakedog browser resolves only Datadog hosts and its extra hosts, not {host}"
                )
                .into()),
            }
        })
    }
}

/// A scripted browser pointed at fakedog.
#[derive(Debug, Clone)]
pub struct Browser {
    http: reqwest::Client,
}

impl Browser {
    /// A browser trusting `ca_pem`, resolving every Datadog host to
    /// `fakedog` and each `(host, addr)` of `extra_hosts` to `addr`.
    pub fn new(
        ca_pem: &str,
        fakedog: SocketAddr,
        extra_hosts: &[(&str, SocketAddr)],
    ) -> Result<Browser, BrowserError> {
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes())
            .map_err(|e| BrowserError::Build(e.to_string()))?;
        let hosts = Hosts {
            fakedog,
            extra: extra_hosts
                .iter()
                .map(|(h, a)| (h.to_ascii_lowercase(), *a))
                .collect(),
        };
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .dns_resolver(Arc::new(hosts))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()
            .map_err(|e| BrowserError::Build(e.to_string()))?;
        Ok(Browser { http })
    }

    /// `GET url`, following redirects.
    pub async fn get(&self, url: &str) -> Result<Page, BrowserError> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| request_error(url, &e))?;
        page_from(url, resp).await
    }

    /// Walks an authorize URL: follows redirects, clicks **Authorize** on
    /// each consent page (keeping the preselected organization), and returns
    /// the page it ends on, normally the partner's callback.
    pub async fn authorize(&self, url: &str) -> Result<Page, BrowserError> {
        self.walk(url, Decision::Authorize, None).await
    }

    /// Like [`Browser::authorize`], choosing the organization named `org`
    /// where the consent page offers a choice (no one is signed in).
    pub(crate) async fn authorize_in(&self, url: &str, org: &str) -> Result<Page, BrowserError> {
        self.walk(url, Decision::Authorize, Some(org)).await
    }

    /// Like [`Browser::authorize`] but clicks **Deny**.
    pub async fn deny(&self, url: &str) -> Result<Page, BrowserError> {
        self.walk(url, Decision::Deny, None).await
    }

    async fn walk(
        &self,
        url: &str,
        decision: Decision,
        org: Option<&str>,
    ) -> Result<Page, BrowserError> {
        let mut page = self.get(url).await?;
        for _ in 0..MAX_CONSENTS {
            if !page.is_consent() {
                return Ok(page);
            }
            page = self.submit_consent(&page, decision, org).await?;
        }
        if page.is_consent() {
            return Err(BrowserError::TooManyConsents(MAX_CONSENTS));
        }
        Ok(page)
    }

    async fn submit_consent(
        &self,
        page: &Page,
        decision: Decision,
        org: Option<&str>,
    ) -> Result<Page, BrowserError> {
        let action = url::Url::parse(&page.url)
            .and_then(|u| u.join("/oauth2/v1/authorize"))
            .map_err(|e| BrowserError::Request {
                url: page.url.clone(),
                message: e.to_string(),
            })?;
        let mut form = vec![(
            "consent_id".to_string(),
            input_value(&page.body, "consent_id").unwrap_or_default(),
        )];
        let choice = match org {
            Some(name) if page.body.contains("<select name=\"dd_oid\">") => {
                Some(option_named(&page.body, name)?)
            }
            _ => selected_option(&page.body),
        };
        if let Some(org) = choice {
            form.push(("dd_oid".to_string(), org));
        }
        let value = match decision {
            Decision::Authorize => "authorize",
            Decision::Deny => "deny",
        };
        form.push(("decision".to_string(), value.to_string()));
        let url = action.to_string();
        let resp = self
            .http
            .post(action)
            .form(&form)
            .send()
            .await
            .map_err(|e| request_error(&url, &e))?;
        page_from(&url, resp).await
    }
}

fn request_error(url: &str, e: &reqwest::Error) -> BrowserError {
    // The error and its sources: reqwest's own text rarely names the cause.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    BrowserError::Request {
        url: url.to_string(),
        message,
    }
}

async fn page_from(url: &str, resp: reqwest::Response) -> Result<Page, BrowserError> {
    let status = resp.status().as_u16();
    let final_url = resp.url().to_string();
    let body = resp.text().await.map_err(|e| request_error(url, &e))?;
    Ok(Page {
        status,
        url: final_url,
        body,
    })
}

/// The value of `<input ... name="NAME" value="...">` in one of our pages.
fn input_value(body: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker)? + marker.len();
    let end = start + body[start..].find('"')?;
    Some(unescape(&body[start..end]))
}

/// The preselected `<option value="..." selected>`, if the page has a select.
fn selected_option(body: &str) -> Option<String> {
    let end = body.find("\" selected>")?;
    let start = body[..end].rfind("<option value=\"")? + "<option value=\"".len();
    Some(unescape(&body[start..end]))
}

/// The value of the `<option>` whose label is `name` (labels read
/// `Name (domain)`); the error lists what is offered.
fn option_named(body: &str, name: &str) -> Result<String, BrowserError> {
    let mut offered = Vec::new();
    for part in body.split("<option value=\"").skip(1) {
        let Some((value, rest)) = part.split_once('"') else {
            continue;
        };
        let label = rest.split_once('>').map_or("", |(_, l)| l);
        let label = unescape(label.split('<').next().unwrap_or_default());
        if label == name || label.starts_with(&format!("{name} (")) {
            return Ok(unescape(value));
        }
        offered.push(label);
    }
    Err(BrowserError::NoSuchOrg {
        wanted: name.to_string(),
        offered: offered.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_forms() {
        let body = "<input type=\"hidden\" name=\"consent_id\" value=\"a&amp;b\">\n\
<option value=\"o1\" selected>One</option>\n<option value=\"o2\">Two</option>";
        assert_eq!(input_value(body, "consent_id").as_deref(), Some("a&b"));
        assert_eq!(selected_option(body).as_deref(), Some("o1"));
        assert_eq!(selected_option("<p>no select</p>"), None);
        assert_eq!(option_named(body, "Two").unwrap(), "o2");
        let select = "<option value=\"o1\" selected>Demo EU1 (datadoghq.eu)</option>";
        assert_eq!(option_named(select, "Demo EU1").unwrap(), "o1");
        let err = option_named(select, "Acme").unwrap_err().to_string();
        assert!(
            err.contains("\"Acme\"") && err.contains("Demo EU1 (datadoghq.eu)"),
            "{err}"
        );
    }
}
